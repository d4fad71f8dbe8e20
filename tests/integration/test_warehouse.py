"""The DuckDB warehouse: incremental, exact and duplicate-free loads of the request log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Engine, insert
from sqlmodel import Session, col, select

from llmops.db.models import RequestLog
from llmops.warehouse.load import REQUEST_LOG_COLUMNS, load_request_log
from llmops.warehouse.queries import run_query

REPO = Path(__file__).resolve().parents[2]
USAGE_SUMMARY = REPO / "reports" / "queries" / "usage_summary.sql"
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=1)
COLUMNS = [name for name, _, _ in REQUEST_LOG_COLUMNS]
#: Costs whose float sum is not their exact sum (0.1 + 0.2 != 0.3 in binary floating point),
#: down to the smallest unit the schema keeps (1e-12 USD).
COSTS = [
    Decimal("0.1"),
    Decimal("0.2"),
    Decimal("0.000000000001"),
    Decimal("0.000022050000"),
    Decimal("123.456789012345"),
    Decimal("0.333333333333"),
    Decimal(0),
]


def make_row(i: int, *, logged_at: datetime = LONG_AGO, **extra: Any) -> dict[str, Any]:
    """A realistic request_log row (column -> value), varied by ``i``."""
    ok = i % 5 != 4
    values: dict[str, Any] = {
        "request_id": f"req_test{i:06d}",
        "started_at": logged_at - timedelta(milliseconds=900),
        "ended_at": logged_at - timedelta(milliseconds=1),
        "logged_at": logged_at,
        "tenant_id": ["acme", "globex"][i % 2],
        "feature_id": ["ticket-summary", "reply-draft", "ticket-triage"][i % 3],
        "action_id": f"act-{i}",
        "job_id": f"job_{i}" if i % 4 == 0 else None,
        "prompt_name": "summarize" if i % 2 else None,
        "prompt_version": 3 if i % 2 else None,
        "model_group": "fast",
        "model": ["openai/gpt-4o-mini", "openai/gpt-4o"][i % 2] if ok else None,
        "deployment_id": "sim-mini" if ok else None,
        "provider": "openai" if ok else None,
        "attempts": 1 + i % 3,
        "fallbacks_used": i % 2,
        "stream": i % 3 == 0,
        "status": "ok" if ok else "error",
        "error_class": None if ok else "rate_limit",
        "error_message": None if ok else "Simulated 429",
        "http_status": None if ok else 429,
        "input_tokens": 100 + i,
        "output_tokens": 10 * i if ok else 0,
        "cached_tokens": i // 2,
        "reasoning_tokens": i // 3,
        "cost_usd": COSTS[i % len(COSTS)] if ok else Decimal(0),
        "price_version": "openai/gpt-4o-mini@2024-07-18" if ok else None,
        "latency_ms": 50 + 7 * i,
        "ttft_ms": 20 + i if i % 3 == 0 else None,
        "request_text": f'[{{"role": "user", "content": "Grüße #{i} — ✓"}}]',
        "response_text": f"Answer {i}" if ok else None,
        "redactions": i % 2,
        "trace_id": f"{i:032x}",
    }
    # Validate through the model: every default filled, every value of the right type.
    return RequestLog.model_validate({**values, **extra}).model_dump(exclude={"id"})


def write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert rows one committed transaction each, as gateway calls do; the DB assigns ids."""
    for row in rows:
        with engine.begin() as conn:
            conn.execute(insert(RequestLog).values(**row))


def ops_rows(engine: Engine) -> list[RequestLog]:
    with Session(engine) as session:
        return list(session.exec(select(RequestLog).order_by(col(RequestLog.id))).all())


def warehouse_rows(path: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute(f"SELECT {', '.join(COLUMNS)} FROM request_log ORDER BY id")
        return [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def scalar(path: Path, sql: str) -> Any:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_load_copies_every_row_exactly(db_engine: Engine, tmp_path: Path) -> None:
    write(db_engine, [make_row(i) for i in range(25)])
    warehouse = tmp_path / "wh" / "warehouse.duckdb"

    stats = load_request_log(db_engine, warehouse, batch_size=7, now=NOW)

    source = ops_rows(db_engine)
    assert (stats.rows_read, stats.rows_inserted, stats.total_rows) == (25, 25, 25)
    assert (stats.watermark_before, stats.watermark_after) == (0, source[-1].id)
    loaded = warehouse_rows(warehouse)
    assert [row["request_id"] for row in loaded] == [r.request_id for r in source]
    for row, original in zip(loaded, source, strict=True):
        assert row == original.model_dump(include=set(COLUMNS))
    assert loaded[0]["started_at"].utcoffset() == timedelta(0)


def test_a_second_load_inserts_nothing_and_later_rows_load_incrementally(
    db_engine: Engine, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    write(db_engine, [make_row(i) for i in range(10)])
    first = load_request_log(db_engine, warehouse, now=NOW)
    second = load_request_log(db_engine, warehouse, now=NOW)

    assert first.rows_inserted == 10
    assert (second.rows_read, second.rows_inserted, second.total_rows) == (0, 0, 10)
    assert second.watermark_before == second.watermark_after == first.watermark_after

    write(db_engine, [make_row(i) for i in range(10, 16)])
    third = load_request_log(db_engine, warehouse, now=NOW)

    assert (third.rows_read, third.rows_inserted, third.total_rows) == (6, 6, 16)
    assert third.watermark_before == first.watermark_after
    assert third.watermark_after == ops_rows(db_engine)[-1].id
    assert [r["request_id"] for r in warehouse_rows(warehouse)] == [
        r.request_id for r in ops_rows(db_engine)
    ]


def test_cost_is_decimal_and_sums_exactly(db_engine: Engine, tmp_path: Path) -> None:
    write(db_engine, [make_row(i) for i in range(40)])
    warehouse = tmp_path / "warehouse.duckdb"
    load_request_log(db_engine, warehouse, now=NOW)

    cost_type = scalar(
        warehouse,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'request_log' AND column_name = 'cost_usd'",
    )
    assert cost_type == "DECIMAL(38,12)"
    source = ops_rows(db_engine)
    ops_total = sum((r.cost_usd for r in source), Decimal(0))
    warehouse_total = scalar(warehouse, "SELECT sum(cost_usd) FROM request_log")
    assert isinstance(warehouse_total, Decimal)
    assert warehouse_total == ops_total
    # The float sum of the same values differs: the test would catch a float column.
    assert float(ops_total) != sum(float(r.cost_usd) for r in source)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        sql = "SELECT tenant_id, sum(cost_usd) FROM request_log GROUP BY tenant_id"
        per_tenant = dict(con.execute(sql).fetchall())
    assert per_tenant == {
        tenant: sum((r.cost_usd for r in source if r.tenant_id == tenant), Decimal(0))
        for tenant in ("acme", "globex")
    }


def test_settle_window_holds_the_watermark_but_loads_rows_once(
    db_engine: Engine, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    settled = [make_row(i, logged_at=NOW - timedelta(minutes=30)) for i in range(4)]
    recent = [make_row(i, logged_at=NOW - timedelta(minutes=1)) for i in range(4, 7)]
    write(db_engine, [*settled, *recent])
    ids = [r.id for r in ops_rows(db_engine)]
    settle = timedelta(minutes=5)

    first = load_request_log(db_engine, warehouse, settle=settle, now=NOW, batch_size=2)
    assert (first.rows_read, first.rows_inserted, first.total_rows) == (7, 7, 7)
    assert first.watermark_after == ids[3]  # the last settled row, not the newest

    again = load_request_log(db_engine, warehouse, settle=settle, now=NOW, batch_size=2)
    assert again.rows_read == 3  # the recent rows are read again...
    assert (again.rows_inserted, again.total_rows) == (0, 7)  # ...but not duplicated
    assert again.watermark_after == ids[3]

    later = load_request_log(
        db_engine, warehouse, settle=settle, now=NOW + timedelta(minutes=10), batch_size=2
    )
    assert (later.rows_read, later.rows_inserted, later.total_rows) == (3, 0, 7)
    assert later.watermark_after == ids[-1]
    rows = warehouse_rows(warehouse)
    assert len({r["request_id"] for r in rows}) == len(rows) == 7


def test_row_committed_late_with_a_smaller_id_is_still_loaded(
    db_engine: Engine, tmp_path: Path
) -> None:
    # On Postgres, id 3 can become visible after id 4 (ids are assigned at insert, rows
    # appear at commit). The settle window is what keeps such a row from being skipped.
    warehouse = tmp_path / "warehouse.duckdb"

    def insert_with_id(row_id: int, logged_at: datetime) -> None:
        with db_engine.begin() as conn:
            conn.execute(
                insert(RequestLog).values(id=row_id, **make_row(row_id, logged_at=logged_at))
            )

    insert_with_id(1, NOW - timedelta(minutes=30))
    insert_with_id(2, NOW - timedelta(minutes=30))
    insert_with_id(4, NOW - timedelta(seconds=20))
    first = load_request_log(db_engine, warehouse, now=NOW)
    assert first.rows_inserted == 3
    assert first.watermark_after == 2

    insert_with_id(3, NOW - timedelta(seconds=30))  # logged before 4, visible only now
    second = load_request_log(db_engine, warehouse, now=NOW + timedelta(seconds=10))
    assert (second.rows_inserted, second.total_rows) == (1, 4)

    settled = load_request_log(db_engine, warehouse, now=NOW + timedelta(hours=1))
    assert (settled.rows_inserted, settled.watermark_after) == (0, 4)
    assert [r["id"] for r in warehouse_rows(warehouse)] == [1, 2, 3, 4]


def test_loading_an_empty_log_creates_the_tables(db_engine: Engine, tmp_path: Path) -> None:
    warehouse = tmp_path / "new" / "warehouse.duckdb"
    stats = load_request_log(db_engine, warehouse, now=NOW)
    assert (stats.rows_read, stats.rows_inserted, stats.total_rows) == (0, 0, 0)
    assert stats.watermark_after == 0
    assert run_query(warehouse, USAGE_SUMMARY) == []


def test_usage_summary_totals_match_the_ops_db(db_engine: Engine, tmp_path: Path) -> None:
    write(db_engine, [make_row(i) for i in range(60)])
    warehouse = tmp_path / "warehouse.duckdb"
    load_request_log(db_engine, warehouse, now=NOW)

    result = run_query(warehouse, USAGE_SUMMARY)

    source = ops_rows(db_engine)
    groups: dict[tuple[str, str, str], list[RequestLog]] = {}
    for r in source:
        groups.setdefault((r.tenant_id, r.feature_id, r.model or "(none)"), []).append(r)
    assert [(r["tenant_id"], r["feature_id"], r["model"]) for r in result] == sorted(groups)
    for summary in result:
        rows = groups[(summary["tenant_id"], summary["feature_id"], summary["model"])]
        assert summary["calls"] == len(rows)
        assert summary["ok"] == sum(1 for r in rows if r.status == "ok")
        assert summary["input_tokens"] == sum(r.input_tokens for r in rows)
        assert summary["output_tokens"] == sum(r.output_tokens for r in rows)
        assert isinstance(summary["cost_usd"], Decimal)
        assert summary["cost_usd"] == sum((r.cost_usd for r in rows), Decimal(0))
        latencies = [r.latency_ms for r in rows]
        assert min(latencies) <= summary["p50_ms"] <= summary["p95_ms"] <= max(latencies)
    assert sum(r["calls"] for r in result) == len(source)
    assert sum(r["ok"] for r in result) == sum(1 for r in source if r.status == "ok")
    assert sum((r["cost_usd"] for r in result), Decimal(0)) == sum(
        (r.cost_usd for r in source), Decimal(0)
    )
    assert any(r["model"] == "(none)" for r in result)  # failed calls have no model
