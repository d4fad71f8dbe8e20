"""Eval runs and results into the DuckDB warehouse (through Arrow), for trend notebooks:
scores per prompt version and model over time. Reloading a run replaces its rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.models import EvalResult, EvalRun

__all__ = ["load_eval_runs"]

_RUNS = """CREATE TABLE IF NOT EXISTS eval_runs (id VARCHAR PRIMARY KEY, suite VARCHAR,
prompt_name VARCHAR, prompt_version INTEGER, prompt_hash VARCHAR, model_group VARCHAR,
dataset_name VARCHAR, dataset_hash VARCHAR, trials INTEGER, status VARCHAR,
baseline_run_id VARCHAR, score DOUBLE, passed BOOLEAN, items_total INTEGER,
items_unscored INTEGER, provider_calls INTEGER, cost_usd DECIMAL(38, 12),
started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, metrics VARCHAR)"""
_RESULTS = """CREATE TABLE IF NOT EXISTS eval_results (run_id VARCHAR, item_id VARCHAR,
trial INTEGER, status VARCHAR, error VARCHAR, score DOUBLE, passed BOOLEAN,
cached BOOLEAN, cost_usd DECIMAL(38, 12), latency_ms INTEGER, scores VARCHAR,
output VARCHAR, PRIMARY KEY (run_id, item_id, trial))"""


def load_eval_runs(engine: Engine, warehouse: Path, run_ids: list[str]) -> int:
    """Copy these runs and their results into DuckDB; returns the result rows loaded."""
    import json

    import duckdb
    import pyarrow as pa

    if not run_ids:
        return 0
    with Session(engine) as session:
        runs = session.exec(select(EvalRun).where(col(EvalRun.id).in_(run_ids))).all()
        results = session.exec(select(EvalResult).where(col(EvalResult.run_id).in_(run_ids))).all()
    run_rows: list[dict[str, Any]] = [
        {
            **r.model_dump(exclude={"metrics"}),
            "score": (r.metrics or {}).get("score"),
            "metrics": json.dumps(r.metrics),
        }
        for r in runs
    ]
    result_rows = [
        {
            **r.model_dump(exclude={"id", "request_id", "created_at", "scores"}),
            "scores": json.dumps(r.scores),
        }
        for r in results
    ]
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(_RUNS)
        con.execute(_RESULTS)
        con.execute("BEGIN")
        placeholders = ", ".join("?" for _ in run_ids)
        con.execute(f"DELETE FROM eval_results WHERE run_id IN ({placeholders})", run_ids)
        con.execute(f"DELETE FROM eval_runs WHERE id IN ({placeholders})", run_ids)
        for table, rows in (("eval_runs", run_rows), ("eval_results", result_rows)):
            if rows:
                arrow = pa.Table.from_pylist(rows)  # noqa: F841 - read by DuckDB by name
                columns = ", ".join(rows[0])
                con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM arrow")
        con.execute("COMMIT")
    finally:
        con.close()
    return len(result_rows)
