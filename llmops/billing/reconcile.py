"""Reconciliation: Stripe's meter event summaries vs the sync ledger vs the meter usage.

For each billed tenant with a Stripe customer, each meter of its plan and each closed hour
of the period, three numbers should agree: ``metered`` (meter usage from the rollups),
``ledger_sent`` (what the ledger says Stripe accepted) and ``stripe`` (Stripe's hourly
event summary). ``flagged`` is usage deliberately not sent (invoice adjustments). Every
hour where ``stripe != ledger_sent`` or ``metered != ledger_sent + flagged`` is a drift,
stored in ``reconciliation_drifts`` and returned; any drift makes ``ok`` false.
Stripe's summaries are eventually consistent: reconcile hours that were synced a while ago.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select

from llmops.billing.client import StripeRejected, call
from llmops.billing.setup import find_meters
from llmops.db.engine import session_scope
from llmops.db.models import MeterUsage, ReconciliationDrift, StripeSyncLedger, Tenant
from llmops.ids import new_id, utcnow
from llmops.metering.plans import BillingConfig

__all__ = ["Drift", "ReconcileReport", "run_reconcile"]

_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Drift:
    """One disagreeing (tenant, meter, hour)."""

    tenant_id: str
    customer: str | None
    meter: str
    window_start: datetime
    metered: int
    ledger_sent: int
    stripe: int
    flagged: int

    @property
    def drift(self) -> int:
        """Stripe minus the ledger, else metered minus what was sent or flagged."""
        return (self.stripe - self.ledger_sent) or (self.metered - self.ledger_sent - self.flagged)


@dataclass
class ReconcileReport:
    """The result of one reconciliation."""

    run_id: str
    start: datetime
    end: datetime
    checked: int = 0
    drifts: list[Drift] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.drifts and not self.problems

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "tenant": d.tenant_id,
                "customer": d.customer or "",
                "meter": d.meter,
                "hour": f"{d.window_start:%Y-%m-%dT%H:00Z}",
                "metered": d.metered,
                "ledger_sent": d.ledger_sent,
                "stripe": d.stripe,
                "flagged": d.flagged,
                "drift": d.drift,
            }
            for d in self.drifts
        ]

    def markdown(self) -> str:
        head = (
            f"# Stripe reconciliation {self.run_id}: "
            f"{'no drift' if self.ok else f'{len(self.drifts)} drifts'}\n\n"
            f"Period {self.start:%Y-%m-%dT%H:%MZ} to {self.end:%Y-%m-%dT%H:%MZ}, "
            f"{self.checked} (customer, meter, hour) checked.\n"
        )
        lines = [head]
        if self.totals:
            lines += [
                "| meter | metered | ledger_sent | stripe | flagged |",
                "|---|---|---|---|---|",
            ]
            for meter, t in sorted(self.totals.items()):
                lines.append(
                    f"| {meter} | {t['metered']} | {t['ledger_sent']} | {t['stripe']} | "
                    f"{t['flagged']} |"
                )
            lines.append("")
        if self.drifts:
            cols = list(self.table()[0])
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in self.table()]
        lines += [f"- {p}" for p in self.problems]
        return "\n".join(lines)


def run_reconcile(
    engine: Engine,
    billing: BillingConfig,
    client: Any,
    *,
    start: datetime,
    end: datetime,
) -> ReconcileReport:
    """Compare Stripe, the ledger and the meter usage for hours in [start, end)."""
    start = start.replace(minute=0, second=0, microsecond=0)
    end = end.replace(minute=0, second=0, microsecond=0)
    report = ReconcileReport(new_id("rec"), start, end, problems=list(billing.problems))
    metered: dict[tuple[str, str, datetime], int] = defaultdict(int)
    sent: dict[tuple[str, str, datetime], int] = defaultdict(int)
    flagged: dict[tuple[str, str, datetime], int] = defaultdict(int)
    with session_scope(engine) as session:
        for u in session.exec(
            select(MeterUsage).where(
                col(MeterUsage.window_start) >= start, col(MeterUsage.window_start) < end
            )
        ).all():
            metered[(u.tenant_id, u.meter, u.window_start)] += u.quantity
        for row in session.exec(
            select(StripeSyncLedger).where(
                col(StripeSyncLedger.window_start) >= start,
                col(StripeSyncLedger.window_start) < end,
            )
        ).all():
            key = (row.tenant_id, row.meter, row.window_start)
            if row.status == "sent":
                sent[key] += row.value
            elif row.status == "adjust":
                flagged[key] += row.value
        tenants = {t.id: t for t in session.exec(select(Tenant)).all()}
    meters = find_meters(client)
    billed = sorted({k[0] for k in metered} | {k[0] for k in sent} | set(billing.tenants))
    for tenant_id in billed:
        trow = tenants.get(tenant_id)
        who = billing.tenant(
            tenant_id, trow.plan if trow else None, trow.stripe_customer_id if trow else None
        )
        if who is None or not who.stripe_customer_id:
            if any(k[0] == tenant_id for k in metered):
                report.problems.append(f"tenant {tenant_id!r} has usage but no Stripe customer")
            continue
        for meter_key in sorted(billing.plans[who.plan].meters):
            spec = billing.meters[meter_key]
            found = meters.get(spec.event_name)
            if found is None:
                report.problems.append(f"meter {meter_key} ({spec.event_name}) is not in Stripe")
                continue
            try:
                stripe_hours = _summaries(client, found["id"], who.stripe_customer_id, start, end)
            except StripeRejected as exc:
                report.problems.append(f"{tenant_id}/{meter_key}: event summaries: {exc}")
                continue
            keys = {
                k[2] for d in (metered, sent, flagged) for k in d if k[:2] == (tenant_id, meter_key)
            } | set(stripe_hours)
            totals = report.totals.setdefault(
                meter_key, {"metered": 0, "ledger_sent": 0, "stripe": 0, "flagged": 0}
            )
            for hour in sorted(keys):
                key = (tenant_id, meter_key, hour)
                drift = Drift(
                    tenant_id,
                    who.stripe_customer_id,
                    meter_key,
                    hour,
                    metered.get(key, 0),
                    sent.get(key, 0),
                    stripe_hours.get(hour, 0),
                    flagged.get(key, 0),
                )
                report.checked += 1
                totals["metered"] += drift.metered
                totals["ledger_sent"] += drift.ledger_sent
                totals["stripe"] += drift.stripe
                totals["flagged"] += drift.flagged
                if drift.drift:
                    report.drifts.append(drift)
    with session_scope(engine) as session:
        now = utcnow()
        for d in report.drifts:
            session.add(
                ReconciliationDrift(
                    run_id=report.run_id,
                    tenant_id=d.tenant_id,
                    stripe_customer_id=d.customer,
                    meter=d.meter,
                    window_start=d.window_start,
                    metered=d.metered,
                    ledger_sent=d.ledger_sent,
                    stripe=d.stripe,
                    flagged=d.flagged,
                    drift=d.drift,
                    created_at=now,
                )
            )
    return report


def _summaries(
    client: Any, meter_id: str, customer: str, start: datetime, end: datetime
) -> dict[datetime, int]:
    """Stripe's hourly totals for one meter and customer (paginated). Where hourly grouping
    is refused, one ungrouped summary per hour instead."""
    from datetime import UTC

    params: dict[str, Any] = {
        "customer": customer,
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
        "value_grouping_window": "hour",
        "limit": 100,
    }
    service = client.v1.billing.meters.event_summaries
    out: dict[datetime, int] = {}
    try:
        page = call(partial(service.list, meter_id, params))
        for summary in page.auto_paging_iter():
            hour = datetime.fromtimestamp(int(summary["start_time"]), UTC)
            out[hour] = out.get(hour, 0) + round(float(summary["aggregated_value"]))
        return out
    except StripeRejected as grouped_refused:
        if grouped_refused.status == 404:
            raise
    hour = start
    while hour < end:
        single = {
            "customer": customer,
            "start_time": int(hour.timestamp()),
            "end_time": int((hour + _HOUR).timestamp()),
        }
        page = call(partial(service.list, meter_id, single))
        value = sum(round(float(s["aggregated_value"])) for s in page.auto_paging_iter())
        if value:
            out[hour] = value
        hour += _HOUR
    return out
