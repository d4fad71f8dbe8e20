"""The rollup tables of the DuckDB warehouse (written by :mod:`llmops.metering.rollup`)."""

from __future__ import annotations

import duckdb

__all__ = ["ROLLUP_COLUMNS", "ROLLUP_KEY", "ensure_rollup_tables"]

#: The grain of ``usage_rollups``, in the ops DB and in DuckDB alike.
ROLLUP_KEY = (
    "granularity",
    "window_start",
    "tenant_id",
    "feature_id",
    "model",
    "prompt_name",
    "prompt_version",
)
#: (name, DuckDB type) of every rollup column, key first.
ROLLUP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("granularity", "VARCHAR NOT NULL"),
    ("window_start", "TIMESTAMPTZ NOT NULL"),
    ("tenant_id", "VARCHAR NOT NULL"),
    ("feature_id", "VARCHAR NOT NULL"),
    ("model", "VARCHAR NOT NULL"),
    ("prompt_name", "VARCHAR NOT NULL"),
    ("prompt_version", "INTEGER NOT NULL"),
    ("calls", "BIGINT"),
    ("successful_calls", "BIGINT"),
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("cached_tokens", "BIGINT"),
    ("reasoning_tokens", "BIGINT"),
    ("cost_usd", "DECIMAL(38, 12)"),
    ("cache_hits", "BIGINT"),
    ("errors", "BIGINT"),
    ("latency_p50_ms", "BIGINT"),
    ("latency_p95_ms", "BIGINT"),
)


def ensure_rollup_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the rollup tables (and the rollup's own state) if they are missing."""
    cols = ", ".join(f"{name} {ddl}" for name, ddl in ROLLUP_COLUMNS)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS usage_rollups ({cols}, PRIMARY KEY ({', '.join(ROLLUP_KEY)}))"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS metering_rejects (request_id VARCHAR PRIMARY KEY, "
        "tenant_id VARCHAR, started_at TIMESTAMPTZ, reason VARCHAR)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS meter_usage (tenant_id VARCHAR, meter VARCHAR, "
        "plan VARCHAR, window_start TIMESTAMPTZ, quantity BIGINT, amount_usd DECIMAL(38, 12), "
        "PRIMARY KEY (tenant_id, meter, window_start))"
    )
    con.execute("CREATE TABLE IF NOT EXISTS rollup_state (name VARCHAR PRIMARY KEY, value VARCHAR)")
