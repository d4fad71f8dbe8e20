"""Stripe sync: send unsent meter usage of closed hours to Stripe as meter events.

Schedule: hourly, after the rollup (see prefect.yaml). Inputs: ``settle_minutes``, and
``rollup_first`` (default on: roll up new request-log rows first, so late usage is sent).
Outputs: the sync report (events sent, refused, flagged, skipped) as a markdown artifact.
The data-quality gate runs on the stored rollups first: a failure sends nothing and fails
the run. Events Stripe refused fail the run after the rest of the batch was sent; Stripe
being unavailable raises a retryable error (pending events are resent verbatim).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact

from flows._common import ops_engine, settings, traced
from flows.usage_rollup import rollup_task
from llmops.billing.client import StripeUnavailable, make_client
from llmops.billing.sync import run_sync
from llmops.errors import LLMOpsError
from llmops.metering.plans import load_billing_config
from llmops.metering.quality import DataQualityError


@task
async def sync_task(settle_minutes: int) -> dict[str, Any]:
    current = settings()
    report = await asyncio.to_thread(
        run_sync,
        ops_engine(current.resolved_database_url),
        load_billing_config(current.billing_config),
        make_client(current),
        settle=timedelta(minutes=settle_minutes),
    )
    return report.to_dict()


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Stripe sync",
        "",
        f"{report['sent']} events accepted ({report['resent']} resent), "
        f"{len(report['rejected'])} refused, {len(report['flagged'])} flagged, "
        f"{len(report['skipped'])} skipped, {report['throttled']} throttled answers.",
        "",
    ]
    for title in ("rejected", "unavailable", "flagged", "skipped", "problems"):
        if report[title]:
            lines += [f"## {title}", *[f"- {item}" for item in report[title]], ""]
    return "\n".join(lines)


@flow(name="stripe-sync", log_prints=True)
@traced
async def stripe_sync(settle_minutes: int = 5, rollup_first: bool = True) -> dict[str, Any]:
    """Send meter usage to Stripe; every event is in the sync ledger."""
    try:
        if rollup_first:
            await rollup_task(settle_minutes)
        report = await sync_task(settle_minutes)
    except DataQualityError as exc:
        await acreate_markdown_artifact(
            key="metering-gate", markdown=exc.result.markdown(), description="GX gate FAILED"
        )
        raise
    await acreate_markdown_artifact(
        key="stripe-sync", markdown=_markdown(report), description="Stripe sync"
    )
    print(_markdown(report))
    if report["unavailable"]:
        raise StripeUnavailable(f"{len(report['unavailable'])} events left pending")
    if report["rejected"]:
        raise LLMOpsError(f"Stripe refused {len(report['rejected'])} events (see the artifact)")
    return report
