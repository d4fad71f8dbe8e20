"""Usage rollups: request log -> hourly and daily rollups and billable meter usage.

Schedule: hourly (see prefect.yaml). Inputs: ``settle_minutes``, how long a request-log row
must have been logged before the load watermark moves past it (later rows are read again).
Outputs: rollup statistics; rollups in the ops DB and the DuckDB warehouse; the data-quality
gate's result as a markdown artifact. A gate failure fails the run (nothing written) and
rejected request-log rows are listed in a table artifact.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from flows._common import ops_engine, settings, traced
from llmops.metering.plans import load_billing_config
from llmops.metering.quality import Check, DataQualityError, GateResult
from llmops.metering.rollup import run_rollup


@task
async def rollup_task(settle_minutes: int) -> dict[str, Any]:
    """Load, recompute dirty windows, gate, write; raises DataQualityError on a failed gate."""
    current = settings()
    billing = load_billing_config(current.billing_config)
    stats = await asyncio.to_thread(
        run_rollup,
        ops_engine(current.resolved_database_url),
        current.resolved_warehouse_path,
        billing,
        settle=timedelta(minutes=settle_minutes),
    )
    return stats.to_dict()


@flow(name="usage-rollup", log_prints=True)
@traced
async def usage_rollup(settle_minutes: int = 5) -> dict[str, Any]:
    """Incrementally roll up usage and refresh billable meter usage."""
    try:
        stats = await rollup_task(settle_minutes)
    except DataQualityError as exc:
        await acreate_markdown_artifact(
            key="metering-gate", markdown=exc.result.markdown(), description="GX gate FAILED"
        )
        raise
    gate = stats["gate"]
    if gate is not None:
        result = GateResult(gate["success"], [Check(**c) for c in gate["checks"]], gate["rows"])
        await acreate_markdown_artifact(
            key="metering-gate", markdown=result.markdown(), description="GX gate"
        )
    if stats["rejects"]:
        await acreate_table_artifact(
            key="metering-rejects",
            table=[{k: str(v) for k, v in row.items()} for row in stats["rejects"]],
            description="request-log rows left out of the rollups",
        )
    print(
        f"rollup: {stats['hours']} hours, {stats['hourly_rows']} hourly rows, "
        f"{stats['meter_usage_rows']} meter-usage rows, {stats['rejected_rows']} rejected rows"
    )
    for problem in stats["problems"]:
        print(f"problem: {problem}")
    return stats
