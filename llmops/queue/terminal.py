"""The one place that learns a job reached a terminal state (completed or dead).

:func:`on_job_terminal` is called by the worker right after the transition committed,
once per job: the transition is fenced on the worker's lease, so only the worker whose
write took effect calls it. This is where the action outcome of a job (issue 6: an
action's success or failure from job completion) is to be recorded; a crash between the
commit and this call skips it, so a consumer that must see every outcome can also sweep
``jobs.completed_at``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine

__all__ = ["TerminalJob", "on_job_terminal"]

log = logging.getLogger("llmops.queue")


@dataclass(frozen=True)
class TerminalJob:
    """What is known about a job as it ends."""

    job_id: str
    tenant_id: str
    feature_id: str
    action_id: str  # the job's action id, or the job id when it has none
    status: str  # completed | dead
    cost_usd: Decimal
    request_id: str | None
    error: str | None


def on_job_terminal(engine: Engine, job: TerminalJob) -> None:
    """Record that ``job`` ended (hook for the action-outcome metering of issue 6)."""
    log.info(
        "job %s (%s/%s, action %s) %s, cost %s",
        job.job_id,
        job.tenant_id,
        job.feature_id,
        job.action_id,
        job.status,
        job.cost_usd,
    )
