"""The one place that learns a job reached a terminal state (completed or dead).

:func:`on_job_terminal` is called by the worker right after the transition committed,
once per job: the transition is fenced on the worker's lease, so only the worker whose
write took effect calls it. It records the action outcome of the job (success or
failure, for cost per successful action); a crash between the commit and this call skips
it, so a consumer that must see every outcome can also sweep ``jobs.completed_at``.
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
    """Record that ``job`` ended. A completed job makes its action a success, unless the
    action already has an outcome (a caller may have posted one through
    ``POST /v1/actions/{id}/outcome``; outcomes are final). A dead-lettered job records
    none: it may still be replayed and succeed, and outcomes cannot be changed. Never
    raises: the job's own state is committed and metering must not undo it."""
    from sqlmodel import Session

    from llmops.metering.actions import ActionConflict, record_action_outcome

    if job.status == "completed":
        try:
            with Session(engine) as session:
                record_action_outcome(
                    session, job.tenant_id, job.action_id, "success", "job", job_id=job.job_id
                )
                session.commit()
        except ActionConflict as exc:
            log.info("action %s keeps its earlier outcome: %s", job.action_id, exc)
        except Exception:
            log.exception("action outcome of job %s not recorded", job.job_id)
    log.info(
        "job %s (%s/%s, action %s) %s, cost %s",
        job.job_id,
        job.tenant_id,
        job.feature_id,
        job.action_id,
        job.status,
        job.cost_usd,
    )
