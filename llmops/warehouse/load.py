"""Incremental loading of the ops DB's request_log into the DuckDB warehouse, through Arrow.

The watermark is the request_log ``id``. On Postgres, ids are assigned at insert but rows
become visible at commit, so a row with a smaller id can appear after a larger one: the
watermark only advances past rows logged more than ``settle`` ago, rows newer than that
are read again next time, and the warehouse's primary key on ``request_id`` drops repeats.

Every load also marks the UTC hours its rows fall in as ``dirty_hours``: the usage rollups
(:mod:`llmops.metering.rollup`) recompute exactly those hours, so a late row reopens the
window it belongs to. Sessions run in UTC so ``date_trunc`` cuts UTC hours and days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Engine, select
from sqlmodel import col

from llmops.db.models import RequestLog
from llmops.ids import utcnow

_TS = pa.timestamp("us", tz="UTC")
_MONEY = pa.decimal128(38, 12)

#: Warehouse columns: (name, Arrow type, DuckDB type). Order is the table's column order.
REQUEST_LOG_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.int64(), "BIGINT"),
    ("request_id", pa.string(), "VARCHAR PRIMARY KEY"),
    ("started_at", _TS, "TIMESTAMPTZ"),
    ("ended_at", _TS, "TIMESTAMPTZ"),
    ("logged_at", _TS, "TIMESTAMPTZ"),
    ("tenant_id", pa.string(), "VARCHAR"),
    ("feature_id", pa.string(), "VARCHAR"),
    ("action_id", pa.string(), "VARCHAR"),
    ("job_id", pa.string(), "VARCHAR"),
    ("prompt_name", pa.string(), "VARCHAR"),
    ("prompt_version", pa.int32(), "INTEGER"),
    ("model_group", pa.string(), "VARCHAR"),
    ("model", pa.string(), "VARCHAR"),
    ("deployment_id", pa.string(), "VARCHAR"),
    ("provider", pa.string(), "VARCHAR"),
    ("attempts", pa.int32(), "INTEGER"),
    ("fallbacks_used", pa.int32(), "INTEGER"),
    ("deployments_tried", pa.list_(pa.string()), "VARCHAR[]"),
    ("cache_hit", pa.bool_(), "BOOLEAN"),
    ("degraded", pa.string(), "VARCHAR"),
    ("stream", pa.bool_(), "BOOLEAN"),
    ("status", pa.string(), "VARCHAR"),
    ("error_class", pa.string(), "VARCHAR"),
    ("error_message", pa.string(), "VARCHAR"),
    ("http_status", pa.int32(), "INTEGER"),
    ("input_tokens", pa.int64(), "BIGINT"),
    ("output_tokens", pa.int64(), "BIGINT"),
    ("cached_tokens", pa.int64(), "BIGINT"),
    ("reasoning_tokens", pa.int64(), "BIGINT"),
    ("cost_usd", _MONEY, "DECIMAL(38, 12)"),
    ("price_version", pa.string(), "VARCHAR"),
    ("latency_ms", pa.int64(), "BIGINT"),
    ("ttft_ms", pa.int64(), "BIGINT"),
    ("request_text", pa.string(), "VARCHAR"),
    ("response_text", pa.string(), "VARCHAR"),
    ("redactions", pa.int32(), "INTEGER"),
    ("trace_id", pa.string(), "VARCHAR"),
]
_SCHEMA = pa.schema([(name, typ) for name, typ, _ in REQUEST_LOG_COLUMNS])
_NAMES = [name for name, _, _ in REQUEST_LOG_COLUMNS]


@dataclass(frozen=True)
class LoadStats:
    """What one load did."""

    rows_read: int
    rows_inserted: int
    watermark_before: int
    watermark_after: int
    total_rows: int


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the warehouse file with its tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    cols = ", ".join(f"{name} {ddl}" for name, _, ddl in REQUEST_LOG_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS request_log ({cols})")
    con.execute(
        "CREATE TABLE IF NOT EXISTS load_state (source VARCHAR PRIMARY KEY, "
        "watermark BIGINT NOT NULL, loaded_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute("CREATE TABLE IF NOT EXISTS dirty_hours (window_start TIMESTAMPTZ PRIMARY KEY)")
    return con


def _watermark(con: duckdb.DuckDBPyConnection, source: str) -> int:
    rows = con.execute("SELECT watermark FROM load_state WHERE source = ?", [source]).fetchall()
    return int(rows[0][0]) if rows else 0


def load_request_log(
    engine: Engine,
    warehouse: Path,
    *,
    batch_size: int = 50_000,
    settle: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
) -> LoadStats:
    """Copy request_log rows newer than the watermark into DuckDB; safe to run any time."""
    cutoff = (now or utcnow()) - settle
    columns = [col(getattr(RequestLog, name)) for name in _NAMES]
    con = connect(warehouse)
    try:
        before = _watermark(con, "request_log")
        after, cursor, read, inserted = before, before, 0, 0
        settled_so_far = True
        with engine.connect() as conn:
            while True:
                stmt = (
                    select(*columns)
                    .where(col(RequestLog.id) > cursor)
                    .order_by(col(RequestLog.id))
                    .limit(batch_size)
                )
                rows = conn.execute(stmt).all()
                if not rows:
                    break
                read += len(rows)
                data: dict[str, list[Any]] = {name: [] for name in _NAMES}
                for row in rows:
                    for name, value in zip(_NAMES, row, strict=True):
                        data[name].append(value)
                    # Advance the watermark only over an unbroken run of settled rows.
                    if settled_so_far and row.logged_at <= cutoff:
                        after = row.id
                    else:
                        settled_so_far = False
                batch = pa.Table.from_pydict(data, schema=_SCHEMA)
                before_count = _count(con)
                con.register("incoming", batch)
                con.execute(
                    "INSERT OR IGNORE INTO dirty_hours "
                    "SELECT DISTINCT date_trunc('hour', started_at) FROM incoming"
                )
                con.execute("INSERT OR IGNORE INTO request_log SELECT * FROM incoming")
                con.unregister("incoming")
                inserted += _count(con) - before_count
                cursor = rows[-1].id
        con.execute(
            "INSERT OR REPLACE INTO load_state VALUES ('request_log', ?, ?)", [after, utcnow()]
        )
        return LoadStats(read, inserted, before, after, _count(con))
    finally:
        con.close()


def _count(con: duckdb.DuckDBPyConnection) -> int:
    # Fetch everything: DuckDB 2 refuses new work while a result is half read.
    return int(con.execute("SELECT count(*) FROM request_log").fetchall()[0][0])
