"""Reconciliation: Stripe's hourly meter summaries vs the sync ledger vs the meter usage.

Schedule: daily (see prefect.yaml). Inputs: ``days`` of closed hours to compare and the
sync's ``settle_minutes`` (hours closed less than that ago are left for the next run).
Outputs: the drift table as a table artifact and a markdown summary; the run fails (the
alert) when any drift is not zero. Drifts are also stored in ``reconciliation_drifts``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from flows._common import ops_engine, settings, traced
from llmops.alerts import check_stripe_drift
from llmops.billing.client import make_client
from llmops.billing.reconcile import ReconcileReport, run_reconcile
from llmops.errors import LLMOpsError
from llmops.ids import utcnow
from llmops.metering.plans import load_billing_config


class DriftDetected(LLMOpsError):
    """Stripe, the ledger and the rollups disagree somewhere."""


@task(retries=2, retry_delay_seconds=30)
async def reconcile_task(days: int, settle_minutes: int) -> ReconcileReport:
    current = settings()
    # Hours the sync has had a chance to send: closed, and past the sync's settle window.
    end = utcnow() - timedelta(minutes=settle_minutes)
    return await asyncio.to_thread(
        run_reconcile,
        ops_engine(current.resolved_database_url),
        load_billing_config(current.billing_config),
        make_client(current),
        start=end - timedelta(days=days),
        end=end,
    )


@flow(name="stripe-reconcile", log_prints=True)
@traced
async def reconcile(days: int = 2, settle_minutes: int = 5) -> dict[str, Any]:
    """Reconcile the last ``days`` of closed hours; fail on any drift."""
    report = await reconcile_task(days, settle_minutes)
    await acreate_markdown_artifact(
        key="stripe-reconcile", markdown=report.markdown(), description="Stripe reconciliation"
    )
    if report.drifts:
        await acreate_table_artifact(
            key="stripe-drift", table=report.table(), description="drift per customer and hour"
        )
    print(report.markdown())
    if report.drifts:
        engine = ops_engine(settings().resolved_database_url)
        await asyncio.to_thread(check_stripe_drift, engine, report.drifts)
        total = sum(abs(d.drift) for d in report.drifts)
        raise DriftDetected(f"{len(report.drifts)} drifting hours, {total} units in total")
    return {"ok": report.ok, "checked": report.checked, "problems": report.problems}
