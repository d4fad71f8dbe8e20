"""Warehouse load: copy new request_log rows from the ops DB into DuckDB, through Arrow.

Schedule: every 15 minutes in production (see prefect.yaml); also run after each batch.
Inputs: ``settle_minutes``, how long a row must have been logged before the watermark
moves past it (rows newer than that are read again next run and deduplicated).
Outputs: load statistics; the DuckDB file at ``LLMOPS_WAREHOUSE_PATH``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

from prefect import flow, task

from flows._common import ops_engine, settings, traced
from llmops.warehouse.load import load_request_log
from llmops.warehouse.mirror import mirror_tables


@task(retries=2, retry_delay_seconds=5)
async def load_request_log_task(settle_minutes: int) -> dict[str, Any]:
    """Load new request_log rows into DuckDB."""
    current = settings()
    stats = await asyncio.to_thread(
        load_request_log,
        ops_engine(current.resolved_database_url),
        current.resolved_warehouse_path,
        settle=timedelta(minutes=settle_minutes),
    )
    return dataclasses.asdict(stats)


@task(retries=2, retry_delay_seconds=5)
async def mirror_ops_tables() -> dict[str, int]:
    """Replace the warehouse copies of small ops-DB tables (caps, outcomes, drift, alerts)."""
    current = settings()
    return await asyncio.to_thread(
        mirror_tables, ops_engine(current.resolved_database_url), current.resolved_warehouse_path
    )


@flow(name="warehouse-load", log_prints=True)
@traced
async def warehouse_load(settle_minutes: int = 5) -> dict[str, Any]:
    """Incrementally load the request log into the DuckDB warehouse.

    Args:
        settle_minutes: How long a request-log row must have been written before the
            watermark moves past it (late commits on Postgres are read again, not skipped).
    """
    stats = await load_request_log_task(settle_minutes)
    stats["mirrored"] = await mirror_ops_tables()
    print(
        f"warehouse: read {stats['rows_read']} rows, inserted {stats['rows_inserted']}, "
        f"{stats['total_rows']} in total"
    )
    return stats
