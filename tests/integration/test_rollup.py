"""Usage rollups on SQLite and Postgres: both stores hold the same exact rollups (money to
the last of 12 decimal places, p50/p95 as the value at that rank), and a failed gate
writes nothing and keeps its hours dirty."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from llmops.db.engine import session_scope
from llmops.db.models import MeteringReject, UsageRollup
from llmops.ids import utcnow
from llmops.metering.quality import DataQualityError
from llmops.metering.rollup import run_rollup
from llmops.warehouse.load import connect, load_request_log
from llmops.warehouse.rollups import ROLLUP_COLUMNS

from .billing_helpers import add_tenants, log_rows

H1 = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
NAMES = [name for name, _ in ROLLUP_COLUMNS]


def _rollup(engine: Engine, warehouse: Path, **options: Any) -> Any:
    return run_rollup(engine, warehouse, None, settle=timedelta(0), **options)


def _ops_rollups(engine: Engine) -> list[tuple[Any, ...]]:
    with session_scope(engine) as session:
        rows = session.exec(select(UsageRollup)).all()
        return sorted(tuple(getattr(r, n) for n in NAMES) for r in rows)


def _duckdb_rollups(warehouse: Path) -> list[tuple[Any, ...]]:
    con = connect(warehouse)
    try:
        return sorted(con.execute(f"SELECT {', '.join(NAMES)} FROM usage_rollups").fetchall())
    finally:
        con.close()


def _rank(values: list[int], q: float) -> int:
    """The exact ``q`` quantile: the smallest value with at least ``q`` of them at or below."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def _expected(specs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rollups of ``specs`` (log_rows specs) computed here, one row at a time."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for spec in specs:
        start: datetime = spec["started_at"]
        model = spec.get("model", "openai/gpt-4o-mini") or "fast"  # model_group when unrouted
        for granularity, window in (
            ("hour", start.replace(minute=0, second=0, microsecond=0)),
            ("day", start.replace(hour=0, minute=0, second=0, microsecond=0)),
        ):
            key = (granularity, window, spec.get("tenant_id", "acme"), "chat", model, "", 0)
            groups[key].append(spec)
    out = []
    for key, rows in groups.items():
        latencies = [r.get("latency_ms", 100) for r in rows]
        ok = sum(1 for r in rows if r.get("status", "ok") == "ok")
        measures = (
            len(rows),
            ok,
            sum(r.get("input_tokens", 100) for r in rows),
            sum(r.get("output_tokens", 20) for r in rows),
            0,
            0,
            sum((Decimal(r.get("cost_usd", "0.000027")) for r in rows), Decimal(0)),
            0,
            len(rows) - ok,
            _rank(latencies, 0.5),
            _rank(latencies, 0.95),
        )
        out.append(key + measures)
    return sorted(out)


def test_both_stores_hold_the_same_exact_rollups_hourly_and_daily(
    db_engine: Engine, tmp_path: Path
) -> None:
    add_tenants(db_engine, "acme", "globex")
    day_before = H1 - timedelta(days=1)
    specs: list[dict[str, Any]] = []
    for i, latency in enumerate([100, 250, 30, 900, 70, 410, 55, 3000, 120, 95, 61]):
        specs.append(
            {
                "started_at": H1 + timedelta(minutes=i),
                "latency_ms": latency,
                "cost_usd": "0.123456789012" if i % 2 else "0.000000000001",
                "status": "error" if i == 3 else "ok",
            }
        )
    specs += [
        {"started_at": H1 + timedelta(hours=1, minutes=i), "latency_ms": 10 * i + 5}
        for i in range(20)
    ]
    specs += [
        {"started_at": day_before + timedelta(minutes=i), "model": None, "tenant_id": "globex"}
        for i in range(3)
    ]
    log_rows(db_engine, specs)
    bad = log_rows(db_engine, [{"started_at": H1, "tenant_id": " ", "latency_ms": 1}])

    stats = _rollup(db_engine, tmp_path / "wh.duckdb")

    assert stats.gate is not None and stats.gate.success
    expected = _expected(specs)
    assert _ops_rollups(db_engine) == expected
    assert _duckdb_rollups(tmp_path / "wh.duckdb") == expected
    with session_scope(db_engine) as session:
        rejects = [(r.request_id, r.reason) for r in session.exec(select(MeteringReject)).all()]
    con = connect(tmp_path / "wh.duckdb")
    try:
        in_duckdb = con.execute("SELECT request_id, reason FROM metering_rejects").fetchall()
    finally:
        con.close()
    assert rejects == in_duckdb == [(bad[0], "missing tenant")]


def test_a_failed_gate_writes_nothing_and_keeps_the_hours_dirty(
    db_engine: Engine, tmp_path: Path
) -> None:
    add_tenants(db_engine, "acme")
    warehouse = tmp_path / "wh.duckdb"
    log_rows(db_engine, [{"started_at": H1 + timedelta(minutes=i)} for i in range(3)])
    _rollup(db_engine, warehouse)
    before = (_ops_rollups(db_engine), _duckdb_rollups(warehouse))
    h2 = H1 + timedelta(hours=1)
    late = log_rows(db_engine, [{"started_at": H1 + timedelta(minutes=9)}, {"started_at": h2}])
    load_request_log(db_engine, warehouse, settle=timedelta(0))
    con = connect(warehouse)
    try:  # damage one new row in the warehouse, as a hand edit there would
        con.execute("UPDATE request_log SET feature_id = NULL WHERE request_id = ?", [late[1]])
    finally:
        con.close()

    with pytest.raises(DataQualityError, match="feature_id"):
        _rollup(db_engine, warehouse, load=False)

    assert (_ops_rollups(db_engine), _duckdb_rollups(warehouse)) == before
    con = connect(warehouse)
    try:
        dirty = sorted(r[0] for r in con.execute("SELECT window_start FROM dirty_hours").fetchall())
        con.execute("UPDATE request_log SET feature_id = 'chat' WHERE request_id = ?", [late[1]])
    finally:
        con.close()
    assert dirty == [H1, h2]
    stats = _rollup(db_engine, warehouse, load=False)
    assert stats.hours == 2 and _ops_rollups(db_engine) == _duckdb_rollups(warehouse)
    assert {(r[1], r[7]) for r in _ops_rollups(db_engine) if r[0] == "hour"} == {(H1, 4), (h2, 1)}


def test_many_scattered_late_hours_are_recomputed_exactly(
    db_engine: Engine, tmp_path: Path
) -> None:
    add_tenants(db_engine, "acme")
    warehouse = tmp_path / "wh.duckdb"
    first = [{"started_at": H1 - timedelta(hours=2 * i), "latency_ms": 7} for i in range(40)]
    log_rows(db_engine, first)
    _rollup(db_engine, warehouse)
    # Late rows land in 40 hours two apart (more runs than a scan names one by one), one
    # of them rejected.
    late = [
        {"started_at": H1 - timedelta(hours=2 * i, minutes=-5), "latency_ms": 100 + i}
        for i in range(40)
    ]
    log_rows(db_engine, late)
    bad = log_rows(db_engine, [{"started_at": H1 - timedelta(hours=30), "input_tokens": -1}])

    stats = _rollup(db_engine, warehouse)

    assert stats.hours == 40 and [r["request_id"] for r in stats.rejects] == bad
    assert _ops_rollups(db_engine) == _duckdb_rollups(warehouse) == _expected(first + late)
