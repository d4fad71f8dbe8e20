"""The one place that learns a job reached a terminal state (completed or dead).

:func:`record_terminal` runs inside the transaction that writes the terminal states (see
:meth:`llmops.queue.store.JobStore.apply`), for the transitions that took effect: the
write is fenced on the worker's lease, so only the worker whose write counted records a
job's end, and the job's state and its action outcome commit together (a crash cannot
keep one without the other). It records the action outcome of each completed job (a
success, for cost per successful action) for a whole group commit at once: one
statement, not a transaction per job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Table, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from llmops.db.models import ActionOutcome

__all__ = ["TerminalJob", "record_terminal"]

log = logging.getLogger("llmops.queue")

_OUTCOMES: Table = ActionOutcome.__table__  # type: ignore[attr-defined]


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


def record_terminal(conn: Connection, jobs: Sequence[TerminalJob], now: datetime) -> None:
    """Record that ``jobs`` ended, in the caller's transaction. A completed job makes its
    action a success, unless the action already has an outcome (a caller may have posted
    one through ``POST /v1/actions/{id}/outcome``; outcomes are final, so the earlier one
    stays). A dead-lettered job records none: it may still be replayed and succeed."""
    wanted: dict[tuple[str, str], TerminalJob] = {}
    for job in jobs:
        if job.status == "completed":
            wanted.setdefault((job.tenant_id, job.action_id), job)
    if wanted:
        insert = (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(_OUTCOMES)
        stmt = insert.on_conflict_do_nothing(
            index_elements=[_OUTCOMES.c.tenant_id, _OUTCOMES.c.action_id]
        ).returning(_OUTCOMES.c.tenant_id, _OUTCOMES.c.action_id)
        rows = [
            {
                "tenant_id": job.tenant_id,
                "action_id": job.action_id,
                "outcome": "success",
                "source": "job",
                "job_id": job.job_id,
                "detail": None,
                "recorded_at": now,
            }
            for job in wanted.values()
        ]
        inserted = {(t, a) for t, a in conn.execute(stmt, rows)}
        if len(inserted) < len(wanted):
            _log_kept(conn, [key for key in wanted if key not in inserted])
    for job in jobs:
        log.info(
            "job %s (%s/%s, action %s) %s, cost %s",
            job.job_id,
            job.tenant_id,
            job.feature_id,
            job.action_id,
            job.status,
            job.cost_usd,
        )


def _log_kept(conn: Connection, keys: list[tuple[str, str]]) -> None:
    """Say which actions keep an earlier, different outcome (the rare case)."""
    stmt = select(
        _OUTCOMES.c.action_id, _OUTCOMES.c.outcome, _OUTCOMES.c.source, _OUTCOMES.c.recorded_at
    ).where(tuple_(_OUTCOMES.c.tenant_id, _OUTCOMES.c.action_id).in_(keys))
    for action_id, outcome, source, recorded_at in conn.execute(stmt):
        if outcome != "success":
            log.info(
                "action %s keeps its earlier outcome %r (from %s at %s); outcomes are final",
                action_id,
                outcome,
                source,
                recorded_at.isoformat(),
            )
