"""LLM batch processing: run a batch of requests through the gateway core.

Schedule: none by default (ad hoc from the UI, the CLI, or as a subflow).
Inputs: the requests (``BatchItem``: tenant, feature, model group, messages), chunk size,
concurrency per chunk, and how many chunks run at once.
Outputs: a summary (items ok and failed, calls, cost) and a markdown artifact. Every call
lands in the request log. Chunks are Prefect tasks with asyncio concurrency inside (never
one task per call); a chunk retries on retryable errors only, and a retry or re-run skips
the items that already succeeded, so nothing is paid for twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows._common import gateway, ops_engine, retry_if_retryable, settings, traced
from llmops.errors import RetryableError
from llmops.gateway.batch import BatchItem, ItemOutcome, run_items
from llmops.gateway.summary import batch_summary, summary_markdown


@task(
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_retryable,
    cache_policy=INPUTS + TASK_SOURCE,
    cache_expiration=timedelta(days=1),
    persist_result=True,
)
async def process_chunk(items: list[BatchItem], concurrency: int) -> list[ItemOutcome]:
    """Run one chunk; raise a retryable error if any item failed transiently."""
    gw = gateway()
    try:
        outcomes = await run_items(gw, items, concurrency)
    finally:
        await gw.aclose()
    transient = [o for o in outcomes if o.status == "failed" and o.retryable]
    if transient:
        raise RetryableError(
            f"{len(transient)} of {len(items)} items failed transiently "
            f"(first: {transient[0].error_class}: {transient[0].error})"
        )
    return outcomes


@task
async def summarize(item_ids: list[str]) -> dict[str, Any]:
    """Count what the request log says about these items (the source of truth)."""
    current = settings()
    return await asyncio.to_thread(
        batch_summary, ops_engine(current.resolved_database_url), item_ids
    )


@flow(name="llm-batch", log_prints=True)
@traced
async def llm_batch(
    items: list[BatchItem],
    chunk_size: int = 100,
    concurrency: int = 16,
    parallel_chunks: int = 2,
) -> dict[str, Any]:
    """Process ``items`` through the gateway in chunks; return the batch summary.

    Args:
        items: The requests: item id, tenant, feature, model group and messages each.
        chunk_size: Items per Prefect task (each task runs its items concurrently).
        concurrency: Calls in flight at once within a task.
        parallel_chunks: Tasks running at once.
    """
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    gate = asyncio.Semaphore(max(1, parallel_chunks))

    async def run(chunk: list[BatchItem]) -> Any:
        async with gate:
            return await process_chunk(chunk, concurrency, return_state=True)  # type: ignore[misc]

    states = await asyncio.gather(*(run(chunk) for chunk in chunks))
    failed_chunks = sum(1 for state in states if not state.is_completed())
    summary = await summarize([item.item_id for item in items])
    summary["failed_chunks"] = failed_chunks
    await acreate_markdown_artifact(
        key="llm-batch-summary", markdown=summary_markdown(summary), description="LLM batch"
    )
    if failed_chunks:
        raise RetryableError(
            f"{failed_chunks} of {len(chunks)} chunks still had transient failures after retries"
        )
    return summary
