"""Mirror small ops-DB tables into DuckDB whole, for dashboards and notebooks.

The request log is loaded incrementally (``load.py``); the tables here are small
(caps, their ledger, action outcomes, reconciliation drift, alerts) and are replaced in
one DuckDB transaction per run, so a reader sees the old copy or the new one, never half.
Types follow the ops DB: money stays exact (``DECIMAL(38, 12)``), timestamps are UTC,
JSON becomes text. A table the ops DB does not have (an older schema) is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import JSON, Boolean, Engine, Float, Integer, inspect, select
from sqlalchemy.sql.schema import Table
from sqlmodel import SQLModel

from llmops.db.types import Money, UTCDateTime

#: Ops-DB tables mirrored by default.
MIRRORED = (
    "spend_caps",
    "budget_ledger",
    "action_outcomes",
    "reconciliation_drifts",
    "alerts",
    "meter_usage",
)


def _arrow_type(column: Any) -> tuple[pa.DataType, str]:
    kind = column.type
    if isinstance(kind, Money):
        return pa.decimal128(38, 12), "DECIMAL(38, 12)"
    if isinstance(kind, UTCDateTime):
        return pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"
    if isinstance(kind, Boolean):
        return pa.bool_(), "BOOLEAN"
    if isinstance(kind, Integer):  # BigInteger and the BIGSERIAL variant included
        return pa.int64(), "BIGINT"
    if isinstance(kind, Float):
        return pa.float64(), "DOUBLE"
    return pa.string(), "VARCHAR"


def _value(column: Any, value: Any) -> Any:
    if value is not None and isinstance(column.type, JSON):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def mirror_tables(
    engine: Engine, warehouse: Path, tables: tuple[str, ...] = MIRRORED
) -> dict[str, int]:
    """Replace each table's DuckDB copy with the ops DB's rows; rows copied per table."""
    import duckdb

    present = set(inspect(engine).get_table_names())
    snapshots: dict[str, tuple[Table, pa.Table]] = {}
    with engine.connect() as conn:
        for name in tables:
            table = SQLModel.metadata.tables.get(name)
            if table is None or name not in present:
                continue
            columns = list(table.columns)
            rows = conn.execute(select(table)).all()
            schema = pa.schema([(c.name, _arrow_type(c)[0]) for c in columns])
            data = {c.name: [_value(c, row._mapping[c.name]) for row in rows] for c in columns}
            snapshots[name] = (table, pa.Table.from_pydict(data, schema=schema))
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("BEGIN")
        for name, (table, arrow) in snapshots.items():
            ddl = ", ".join(f'"{c.name}" {_arrow_type(c)[1]}' for c in table.columns)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" ({ddl})')
            con.register("_mirror_rows", arrow)
            con.execute(f'INSERT INTO "{name}" SELECT * FROM _mirror_rows')
            con.unregister("_mirror_rows")
        con.execute("COMMIT")
    finally:
        con.close()
    return {name: arrow.num_rows for name, (_, arrow) in snapshots.items()}
