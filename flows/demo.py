"""The demo pipeline: seed demo data, run a batch through the gateway, load the warehouse.

Schedule: none (run by ``llmops demo`` / ``make demo``, or ad hoc from the UI).
Inputs: the number of requests. Expects the gateway's deployments to answer (``llmops
demo`` starts the provider simulator first and points ``LLMOPS_SIM_URL`` at it).
Outputs: the batch summary and the warehouse load statistics.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, task

from flows._common import ops_engine, settings, traced
from flows.llm_batch import llm_batch
from flows.warehouse import warehouse_load
from llmops.demo import build_items, seed
from llmops.gateway.batch import BatchItem
from llmops.prompts.files import load_prompts


@task
async def seed_demo(n_requests: int) -> list[BatchItem]:
    """Seed tenants, features and prompt versions; build the demo requests."""
    current = settings()
    prompts = load_prompts(current.prompts_dir)
    versions = await asyncio.to_thread(seed, ops_engine(current.resolved_database_url), prompts)
    return build_items(prompts, versions, n_requests)


@flow(name="demo", log_prints=True)
@traced
async def demo(n_requests: int = 300, concurrency: int = 16) -> dict[str, Any]:
    """Seed, process ``n_requests`` through the gateway, load DuckDB.

    Args:
        n_requests: How many demo requests to send through the gateway.
        concurrency: Calls in flight at once.
    """
    items = await seed_demo(n_requests)
    batch = await llm_batch(items, concurrency=concurrency)
    load = await warehouse_load(settle_minutes=0)
    return {"batch": batch, "warehouse": load}
