"""Queue worker: drain the durable job queue through the gateway core.

Schedule: none by default; deploy it continuous (``continuous=True``) on a process work
pool, or run it ad hoc to drain the queue until it is empty. Several runs (on one or many
machines) share the queue safely: claims are leased in the ops DB.
Inputs: batch size (jobs per claim), concurrency (jobs in flight per process), whether to
run continuously, how long one drain task runs, the grace period on SIGTERM/SIGINT.
Outputs: the summed worker statistics (claimed, completed, retried, dead, recovered,
released, cost) and a markdown artifact. Each task drains many batches with asyncio
concurrency inside (never one task per job); on SIGTERM/SIGINT the worker stops claiming,
lets in-flight jobs finish for the grace period and releases the rest to the queue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact

from flows._common import gateway, ops_engine, retry_if_retryable, settings, traced
from llmops.queue.worker import QueueWorker, install_signal_handlers


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_if_retryable)
async def drain(
    batch_size: int, concurrency: int, until_empty: bool, max_seconds: float, grace_s: float
) -> dict[str, Any]:
    """Run the engine worker for up to ``max_seconds`` (or until the queue is empty)."""
    current = settings()
    gw = gateway()
    worker = QueueWorker.from_settings(
        current,
        ops_engine(current.resolved_database_url),
        gw,
        batch_size=batch_size,
        concurrency=concurrency,
    )
    install_signal_handlers(worker)
    try:
        stats = await worker.run(until_empty=until_empty, max_seconds=max_seconds, grace_s=grace_s)
    finally:
        await gw.aclose()
    return {"worker": worker.worker_id, **stats.as_dict()}


_COUNTS = ("claimed", "completed", "recovered", "retried", "dead", "released", "lost_leases")


@flow(name="queue-worker", log_prints=True)
@traced
async def queue_worker(
    batch_size: int = 50,
    concurrency: int = 50,
    continuous: bool = False,
    round_seconds: float = 300.0,
    grace_s: float = 30.0,
) -> dict[str, Any]:
    """Drain the queue (until empty, or forever with ``continuous``); return the totals.

    Args:
        batch_size: Jobs claimed at a time (under one lease each).
        concurrency: Jobs in flight at once in this worker.
        continuous: Keep polling for new jobs instead of stopping when the queue is empty.
        round_seconds: Length of one task's drain round when continuous (a task per round).
        grace_s: On SIGTERM/SIGINT, seconds to let in-flight jobs finish before releasing them.
    """
    totals: dict[str, Any] = {key: 0 for key in _COUNTS}
    cost = Decimal(0)
    rounds = 0
    while True:
        stats = await drain(batch_size, concurrency, not continuous, round_seconds, grace_s)
        rounds += 1
        for key in _COUNTS:
            totals[key] += stats[key]
        cost += Decimal(stats["cost_usd"])
        if stats["ended"] == "stopped" or (stats["ended"] == "empty" and not continuous):
            break
    totals.update(cost_usd=str(cost), rounds=rounds)
    table = "\n".join(f"| {key} | {value} |" for key, value in totals.items())
    await acreate_markdown_artifact(
        key="queue-worker",
        markdown=f"# Queue worker\n\n| | |\n|---|---|\n{table}\n",
        description="Queue worker run",
    )
    print(f"queue worker: {totals}")
    return totals
