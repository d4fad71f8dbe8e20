"""Billable meter usage per (tenant, meter, hour), derived from the hourly rollups and the
action outcomes under each tenant's plan (``config/billing.yaml``).

It is refreshed for the hours the rollup just recomputed and the hours of newly recorded
action outcomes (an id watermark on ``action_outcomes``, advanced only past outcomes
recorded more than the settle window ago, as the warehouse loader does). Quantities are
integers in each meter's unit; see :mod:`llmops.metering.plans`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, delete, insert
from sqlmodel import Session, col, select

from llmops.db.engine import session_scope
from llmops.db.models import ActionOutcome, MeteringWatermark, MeterUsage, Tenant, UsageRollup
from llmops.ids import utcnow
from llmops.metering.plans import BillingConfig, micro_usd

__all__ = ["UsageRefresh", "expected_meter_usage", "hour_of", "refresh_meter_usage"]

_HOUR = timedelta(hours=1)
_OUTCOMES = "action_outcomes"


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour containing ``moment``."""
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class UsageRefresh:
    """What one refresh wrote."""

    rows: int = 0
    touched_hours: list[datetime] = field(default_factory=list)
    rows_by_hour: list[dict[str, Any]] | None = None
    problems: list[str] = field(default_factory=list)


def _in_hours(column: Any, hours: list[datetime]) -> Any:
    return (column >= min(hours)) & (column < max(hours) + _HOUR)


def _new_measures() -> dict[str, Any]:
    acc: dict[str, Any] = defaultdict(int)
    acc["cost"] = Decimal(0)
    return acc


def expected_meter_usage(
    session: Session, billing: BillingConfig, hours: list[datetime]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Meter usage rows for ``hours`` recomputed from rollups and outcomes, and problems."""
    if not hours:
        return [], []
    wanted = set(hours)
    measures: dict[tuple[str, datetime], dict[str, Any]] = defaultdict(_new_measures)
    rollups = session.exec(
        select(UsageRollup).where(
            col(UsageRollup.granularity) == "hour", _in_hours(col(UsageRollup.window_start), hours)
        )
    ).all()
    for r in rollups:
        if r.window_start not in wanted:
            continue
        acc = measures[(r.tenant_id, r.window_start)]
        acc["input_tokens"] += r.input_tokens
        acc["output_tokens"] += r.output_tokens
        acc["total_tokens"] += r.input_tokens + r.output_tokens
        acc["calls"] += r.calls
        acc["successful_calls"] += r.successful_calls
        acc["cost"] += r.cost_usd
    outcomes = session.exec(
        select(ActionOutcome.tenant_id, ActionOutcome.recorded_at).where(
            col(ActionOutcome.outcome) == "success",
            _in_hours(col(ActionOutcome.recorded_at), hours),
        )
    ).all()
    for tenant_id, recorded_at in outcomes:
        if hour_of(recorded_at) in wanted:
            measures[(tenant_id, hour_of(recorded_at))]["successful_actions"] += 1
    tenants = {t.id: t for t in session.exec(select(Tenant)).all()}
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    unbilled: set[str] = set()
    for (tenant_id, hour), acc in sorted(measures.items()):
        row = tenants.get(tenant_id)
        who = billing.tenant(
            tenant_id, row.plan if row else None, row.stripe_customer_id if row else None
        )
        if who is None:
            unbilled.add(tenant_id)
            continue
        plan = billing.plans[who.plan]
        for key, price in plan.meters.items():
            meter = billing.meters[key]
            if meter.measure == "provider_cost":
                quantity = micro_usd(acc["cost"] * (1 + (price.markup or Decimal(0))))
            else:
                quantity = int(acc[meter.measure])
            if quantity == 0:
                continue
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "meter": key,
                    "plan": who.plan,
                    "window_start": hour,
                    "quantity": quantity,
                    "amount_usd": plan.price(meter, key, quantity),
                }
            )
    problems.extend(
        f"tenant {t!r} has usage but no plan (not in {billing.file}, no plan on its tenants "
        "row, no default_plan): not billed"
        for t in sorted(unbilled)
    )
    return rows, problems


def _outcome_hours(session: Session, settle: timedelta, now: datetime) -> tuple[set[datetime], int]:
    mark = session.get(MeteringWatermark, _OUTCOMES)
    position = mark.position if mark else 0
    cutoff = now - settle
    hours: set[datetime] = set()
    advanced, settled = position, True
    for oid, recorded_at in session.exec(
        select(ActionOutcome.id, ActionOutcome.recorded_at)
        .where(col(ActionOutcome.id) > position)
        .order_by(col(ActionOutcome.id))
    ).all():
        hours.add(hour_of(recorded_at))
        if settled and recorded_at <= cutoff and oid is not None:
            advanced = oid
        else:
            settled = False
    return hours, advanced


def refresh_meter_usage(
    engine: Engine,
    billing: BillingConfig,
    hours: list[datetime],
    *,
    settle: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
) -> UsageRefresh:
    """Recompute meter usage for ``hours`` and for hours with new action outcomes."""
    now = now or utcnow()
    result = UsageRefresh(problems=list(billing.problems))
    with session_scope(engine) as session:
        outcome_hours, position = _outcome_hours(session, settle, now)
        touched = sorted(set(hours) | outcome_hours)
        result.touched_hours = touched
        written: list[dict[str, Any]] = []
        for start in range(0, len(touched), 500):
            chunk = touched[start : start + 500]
            rows, problems = expected_meter_usage(session, billing, chunk)
            result.problems.extend(p for p in problems if p not in result.problems)
            session.execute(delete(MeterUsage).where(col(MeterUsage.window_start).in_(chunk)))
            stamped = [{**row, "updated_at": now} for row in rows]
            for at in range(0, len(stamped), 5000):
                session.execute(insert(MeterUsage), stamped[at : at + 5000])
            written.extend(rows)
        mark = session.get(MeteringWatermark, _OUTCOMES)
        if mark is None:
            session.add(MeteringWatermark(name=_OUTCOMES, position=position, updated_at=now))
        else:
            mark.position, mark.updated_at = position, now
    result.rows = len(written)
    result.rows_by_hour = written
    return result
