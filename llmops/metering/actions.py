"""Actions: the calls that served one user action share an ``action_id`` (retries,
fallbacks, multi-step chains). Its outcome comes from job completion or from
``POST /v1/actions/{id}/outcome``, and is final once recorded.

Cost per action and per successful action count every call that served the action,
failed attempts included: an action that needed three tries costs all three.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.db.models import ActionOutcome, RequestLog
from llmops.errors import ValidationError
from llmops.ids import utcnow

__all__ = [
    "OUTCOMES",
    "ActionConflict",
    "ActionCosts",
    "action_costs",
    "record_action_outcome",
]

Outcome = Literal["success", "failure"]
OUTCOMES: tuple[str, ...] = ("success", "failure")


class ActionConflict(ValidationError):
    """The action already has a different outcome (outcomes are final)."""


def record_action_outcome(
    session: Session,
    tenant_id: str,
    action_id: str,
    outcome: str,
    source: str,
    *,
    job_id: str | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> tuple[ActionOutcome, bool]:
    """Record an action's outcome; returns (row, created). Repeating the same outcome is a
    no-op; a different one raises :class:`ActionConflict`. The caller commits."""
    if outcome not in OUTCOMES:
        raise ValidationError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if not action_id or len(action_id) > 100:
        raise ValidationError("action id must be 1 to 100 characters")
    if not tenant_id:
        raise ValidationError("an action outcome needs a tenant")
    existing = _get(session, tenant_id, action_id)
    if existing is None:
        row = ActionOutcome(
            tenant_id=tenant_id,
            action_id=action_id,
            outcome=outcome,
            source=source[:32],
            job_id=job_id,
            detail=(detail or None) and detail[:1000],
            recorded_at=at or utcnow(),
        )
        try:
            with session.begin_nested():
                session.add(row)
            return row, True
        except IntegrityError:
            # Another writer recorded it between our read and our insert: compare with theirs.
            existing = _get(session, tenant_id, action_id)
            if existing is None:
                raise
    if existing.outcome != outcome:
        raise ActionConflict(
            f"action {action_id!r} already has outcome {existing.outcome!r} "
            f"(from {existing.source} at {existing.recorded_at.isoformat()}); outcomes are final"
        )
    return existing, False


def _get(session: Session, tenant_id: str, action_id: str) -> ActionOutcome | None:
    return session.exec(
        select(ActionOutcome).where(
            col(ActionOutcome.tenant_id) == tenant_id, col(ActionOutcome.action_id) == action_id
        )
    ).first()


@dataclass(frozen=True)
class ActionCosts:
    """Unit economics of actions for one (tenant, feature)."""

    tenant_id: str
    feature_id: str
    actions: int
    successful: int
    failed: int
    pending: int
    calls: int
    failed_calls: int
    cost_usd: Decimal

    @property
    def cost_per_action(self) -> Decimal | None:
        return self.cost_usd / self.actions if self.actions else None

    @property
    def cost_per_successful_action(self) -> Decimal | None:
        """Everything spent (failed attempts and failed actions too) per success."""
        return self.cost_usd / self.successful if self.successful else None


def action_costs(
    session: Session,
    *,
    tenant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ActionCosts]:
    """Per (tenant, feature): actions by outcome, their calls and the cost of all of them."""
    stmt = sa_select(
        col(RequestLog.tenant_id),
        col(RequestLog.feature_id),
        col(RequestLog.action_id),
        col(RequestLog.status),
        col(RequestLog.cost_usd),
    ).where(col(RequestLog.action_id).is_not(None))
    if tenant_id:
        stmt = stmt.where(col(RequestLog.tenant_id) == tenant_id)
    if since:
        stmt = stmt.where(col(RequestLog.started_at) >= since)
    if until:
        stmt = stmt.where(col(RequestLog.started_at) < until)
    calls: dict[tuple[str, str, str], list[tuple[str, Decimal]]] = defaultdict(list)
    for tenant, feature, action, status, cost in session.execute(stmt).all():
        calls[(tenant, feature, str(action))].append((status, cost))
    outcome_stmt = select(ActionOutcome.tenant_id, ActionOutcome.action_id, ActionOutcome.outcome)
    if tenant_id:
        outcome_stmt = outcome_stmt.where(col(ActionOutcome.tenant_id) == tenant_id)
    outcomes = {(t, a): o for t, a, o in session.exec(outcome_stmt).all()}
    acc: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    for (tenant, feature, action), served in calls.items():
        entry = acc[(tenant, feature)]
        entry.actions += 1
        outcome = outcomes.get((tenant, action))
        if outcome == "success":
            entry.successful += 1
        elif outcome == "failure":
            entry.failed += 1
        else:
            entry.pending += 1
        entry.calls += len(served)
        entry.failed_calls += sum(1 for status, _ in served if status != "ok")
        entry.cost += sum((cost for _, cost in served), Decimal(0))
    return [
        ActionCosts(
            tenant,
            feature,
            e.actions,
            e.successful,
            e.failed,
            e.pending,
            e.calls,
            e.failed_calls,
            e.cost,
        )
        for (tenant, feature), e in sorted(acc.items())
    ]


@dataclass
class _Acc:
    actions: int = 0
    successful: int = 0
    failed: int = 0
    pending: int = 0
    calls: int = 0
    failed_calls: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))
