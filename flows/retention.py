"""Retention: purge request and response text past each tenant's retention period.

Schedule: daily at 03:30 UTC (see prefect.yaml). Policy: ``config/retention.yaml``
(``LLMOPS_RETENTION_CONFIG``). Rows, rollups and billing records are kept; only text goes,
in the ops DB and in the DuckDB warehouse.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, task

from flows._common import ops_engine, settings, traced
from llmops.retention import load_retention, purge_text


@task(retries=2, retry_delay_seconds=30)
async def purge() -> dict[str, Any]:
    """Clear expired text in the ops DB and the warehouse."""
    current = settings()
    policy = load_retention(current.retention_config)
    report = await asyncio.to_thread(
        purge_text,
        ops_engine(current.resolved_database_url),
        policy,
        warehouse=current.resolved_warehouse_path,
    )
    return {"ops_rows": report.ops_rows, "warehouse_rows": report.warehouse_rows}


@flow(name="retention", log_prints=True)
@traced
async def retention() -> dict[str, Any]:
    """Purge request and response text older than the configured retention."""
    result = await purge()
    print(
        f"retention: cleared text of {sum(result['ops_rows'].values())} request-log rows "
        f"({result['ops_rows']}) and {result['warehouse_rows']} warehouse rows"
    )
    return result
