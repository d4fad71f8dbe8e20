"""Alerts: run the detectors, record what they find, deliver it through the webhook block.

Schedule: every 5 minutes (see prefect.yaml). Detectors: provider error spikes and soft
caps at 80%/100% here; dead-letter growth, Stripe drift and eval regressions are raised by
their own pipelines. Delivery goes through the ``llmops-alerts`` notification block
(``llmops blocks register`` saves it from ``LLMOPS_ALERT_WEBHOOK_URL``); with no block the
alerts are recorded only. An unreachable webhook never fails this flow: the error is
recorded on the alert, logged, published as an artifact, and retried next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact

from flows._common import ops_engine, settings, traced
from llmops.alerts import (
    check_dead_letters,
    check_provider_errors,
    check_soft_caps,
    deliver_pending,
)
from llmops.gateway.budget import BudgetManager

ALERT_BLOCK = "llmops-alerts"


@task
async def detect(
    error_rate_threshold: float, window_minutes: int, dead_letter_threshold: int
) -> list[dict[str, Any]]:
    """Run every detector; the alerts raised (new or repeated)."""
    return await asyncio.to_thread(
        _detect, error_rate_threshold, window_minutes, dead_letter_threshold
    )


def _detect(
    error_rate_threshold: float, window_minutes: int, dead_letter_threshold: int
) -> list[dict[str, Any]]:
    from datetime import timedelta

    engine = ops_engine(settings().resolved_database_url)
    raised = check_provider_errors(
        engine, window=timedelta(minutes=window_minutes), threshold=error_rate_threshold
    )
    raised += check_soft_caps(BudgetManager(engine).list_caps(), engine)
    raised += check_dead_letters(engine, threshold=dead_letter_threshold)
    return [{"kind": r.kind, "key": r.key, "new": r.new} for r in raised]


async def _notifier() -> Callable[[str, str], None] | None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    try:
        loaded = await CustomWebhookNotificationBlock.aload(ALERT_BLOCK)
        block = cast(CustomWebhookNotificationBlock, loaded)
    except ValueError:
        return None

    def notify(subject: str, body: str) -> None:  # runs in a worker thread: its own loop
        asyncio.run(block.anotify(body, subject))

    return notify


@task
async def deliver() -> dict[str, Any]:
    """Send undelivered alerts through the webhook block; failures are recorded, not raised."""
    notify = await _notifier()
    if notify is None:
        return {"sent": [], "failed": [], "block": None}
    engine = ops_engine(settings().resolved_database_url)
    report = await asyncio.to_thread(deliver_pending, engine, notify)
    return {"sent": report.sent, "failed": report.failed, "block": ALERT_BLOCK}


@flow(name="alerts", log_prints=True)
@traced
async def alerts(
    error_rate_threshold: float = 0.2, window_minutes: int = 15, dead_letter_threshold: int = 10
) -> dict[str, Any]:
    """Detect alert conditions and deliver new alerts, once per condition.

    Args:
        error_rate_threshold: Share of calls (0-1) failing or falling back that raises a
            provider-errors alert for a model group.
        window_minutes: How far back the error rate is measured, in minutes.
        dead_letter_threshold: Jobs dead-lettered within an hour that raise a
            dead-letter-growth alert.
    """
    logger = get_run_logger()
    raised = await detect(error_rate_threshold, window_minutes, dead_letter_threshold)
    delivery = await deliver()
    new = [r for r in raised if r["new"]]
    print(
        f"alerts: {len(new)} new, {len(raised) - len(new)} repeated; "
        f"delivered {len(delivery['sent'])}, failed {len(delivery['failed'])}"
    )
    if delivery["block"] is None:
        logger.info("no %r block saved: alerts are recorded in the ops DB only", ALERT_BLOCK)
    if delivery["failed"]:
        lines = ["| alert | delivery error |", "|---|---|"]
        lines += [f"| {alert_id} | {error} |" for alert_id, error in delivery["failed"]]
        logger.warning("alert delivery failed for %d alert(s)", len(delivery["failed"]))
        await acreate_markdown_artifact(
            key="alert-delivery-failures",
            markdown="# Alerts not delivered\n\n" + "\n".join(lines),
            description="The alert webhook did not accept these; retried next run.",
        )
    return {"raised": raised, **delivery}
