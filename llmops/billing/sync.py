"""Stripe sync: meter usage -> Stripe meter events, with a ledger of every event.

For each closed (tenant, meter, hour) the sync sends what Stripe does not have yet: the
quantity minus what the ledger already accounts for (sent, pending or flagged). The
first send of a window is seq 0, late usage goes as a delta with the next seq, so Stripe's
sum for the hour always equals the meter usage. Identifiers are deterministic:
``llmops-<tenant>-<meter>-<YYYYMMDDHH>-<seq>`` (hashed when over Stripe's 100 characters),
and each request carries the identifier as its ``Idempotency-Key`` too.

Crash safety: a ledger row is committed as ``pending`` *before* its request; a rerun
resends pending rows verbatim (same identifier, same value) before computing new deltas,
so a crash at any point leaves neither a duplicate nor a gap. Only an answer from Stripe
marks a row ``sent``; a 4xx marks it ``rejected`` with Stripe's message (not counted,
so the amount is retried as a new seq next run); a duplicate-identifier answer means Stripe
already holds the event and marks it ``sent``.

Stripe accepts event timestamps only within the past 35 days: usage older than that (less
an hour of margin) is written as ``adjust`` (flagged for an invoice adjustment), as is a
decrease after a send (meter values here are never negative); both are reported.

The data-quality gate runs first on every hour about to be sent; a failure sends nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.billing.client import Pacer, RetryPolicy, StripeRejected, StripeUnavailable, call
from llmops.billing.setup import CUSTOMER_KEY, VALUE_KEY
from llmops.db.engine import session_scope
from llmops.db.models import MeterUsage, StripeSyncLedger, Tenant
from llmops.ids import utcnow
from llmops.metering.audit import check_stored
from llmops.metering.plans import BillingConfig
from llmops.metering.quality import DataQualityError, GateResult

__all__ = ["STRIPE_MAX_AGE", "SyncReport", "event_identifier", "run_sync"]

_HOUR = timedelta(hours=1)
#: Stripe refuses meter events older than 35 days; keep an hour of margin for the send.
STRIPE_MAX_AGE = timedelta(days=35) - _HOUR
#: Sent-or-about-to-be statuses: amounts Stripe has or will have.
_COUNTED = ("sent", "pending", "adjust")
#: Ledger rows written (and answers stored) per transaction.
BATCH = 200


def event_identifier(tenant_id: str, meter: str, window_start: datetime, seq: int) -> str:
    """The deterministic meter-event identifier of one (tenant, meter, hour, seq)."""
    readable = f"llmops-{tenant_id}-{meter}-{window_start:%Y%m%d%H}-{seq}"
    if len(readable) <= 100:
        return readable
    digest = hashlib.sha256(f"{tenant_id}\0{meter}\0{window_start:%Y%m%d%H}".encode()).hexdigest()
    return f"llmops-{digest[:40]}-{seq}"


@dataclass
class SyncReport:
    """What one sync did; ``failures`` name the event and Stripe's answer."""

    sent: int = 0
    resent: int = 0
    sent_value: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    throttled: int = 0
    seconds: float = 0.0
    gate: GateResult | None = None

    @property
    def ok(self) -> bool:
        return not (self.rejected or self.unavailable)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "gate"}
        out["sent_value"] = dict(self.sent_value)
        out["gate"] = self.gate.to_dict() if self.gate else None
        return out


@dataclass(frozen=True)
class _Event:
    ledger_id: int
    identifier: str
    event_name: str
    customer: str
    window_start: datetime
    value: int


def run_sync(
    engine: Engine,
    billing: BillingConfig,
    client: Any,
    *,
    now: datetime | None = None,
    settle: timedelta = timedelta(minutes=5),
    gate: bool = True,
    pacer: Pacer | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncReport:
    """Send every unsent delta of closed hours to Stripe; see the module docstring."""
    started = time.perf_counter()
    now = now or utcnow()
    pacer = pacer or Pacer()
    report = SyncReport(problems=list(billing.problems))
    closed_before = now - settle - _HOUR
    with Session(engine, expire_on_commit=False) as session:
        usage = {
            (u.tenant_id, u.meter, u.window_start): u.quantity
            for u in session.exec(
                select(MeterUsage).where(col(MeterUsage.window_start) <= closed_before)
            ).all()
        }
        counted: dict[tuple[str, str, datetime], int] = defaultdict(int)
        next_seq: dict[tuple[str, str, datetime], int] = defaultdict(int)
        pending: list[StripeSyncLedger] = []
        for row in session.exec(select(StripeSyncLedger)).all():
            key = (row.tenant_id, row.meter, row.window_start)
            next_seq[key] = max(next_seq[key], row.seq + 1)
            if row.status in _COUNTED:
                counted[key] += row.value
            if row.status == "pending":
                pending.append(row)
        deltas = {
            key: usage.get(key, 0) - counted.get(key, 0)
            for key in set(usage) | set(counted)
            if usage.get(key, 0) != counted.get(key, 0)
        }
        if gate and (deltas or pending):
            hours = sorted({key[2] for key in deltas} | {row.window_start for row in pending})
            report.gate = check_stored(session, billing, hours)
            if not report.gate.success:
                raise DataQualityError(report.gate, "the stored rollups (nothing sent to Stripe)")
        tenants = {t.id: t for t in session.exec(select(Tenant)).all()}
    resend = [_event_of(row) for row in sorted(pending, key=lambda r: r.identifier)]
    for start in range(0, len(resend), BATCH):
        results = [
            _send(client, event, report, pacer, policy, sleep, resend=True)
            for event in resend[start : start + BATCH]
        ]
        _record(engine, results)
    fresh: list[StripeSyncLedger] = []
    for key in sorted(deltas):
        tenant_id, meter_key, window_start = key
        delta = deltas[key]
        meter = billing.meters.get(meter_key)
        tenant = tenants.get(tenant_id)
        who = billing.tenant(
            tenant_id,
            tenant.plan if tenant else None,
            tenant.stripe_customer_id if tenant else None,
        )
        where = f"{tenant_id}/{meter_key}/{window_start:%Y-%m-%dT%H}Z"
        if meter is None:
            report.skipped.append(f"{where}: meter {meter_key!r} is not in {billing.file}")
            continue
        if who is None or not who.stripe_customer_id:
            report.skipped.append(
                f"{where}: tenant {tenant_id!r} has no Stripe customer "
                f"({delta} units not sent; run `llmops billing setup`)"
            )
            continue
        reason = None
        if delta < 0:
            reason = f"usage fell by {-delta} after it was sent: needs an invoice adjustment"
        elif window_start < now - STRIPE_MAX_AGE:
            reason = "older than Stripe's 35-day limit on meter events: needs an invoice adjustment"
        seq = next_seq[key]
        fresh.append(
            StripeSyncLedger(
                identifier=event_identifier(tenant_id, meter_key, window_start, seq),
                tenant_id=tenant_id,
                stripe_customer_id=who.stripe_customer_id,
                meter=meter_key,
                event_name=meter.event_name,
                window_start=window_start,
                window_end=window_start + _HOUR,
                seq=seq,
                value=delta,
                status="adjust" if reason else "pending",
                error=reason,
                created_at=utcnow(),
            )
        )
    for start in range(0, len(fresh), BATCH):
        # Pending rows are committed before any of their requests goes out.
        written = _insert(engine, fresh[start : start + BATCH], report)
        for row in written:
            if row.status == "adjust":
                report.flagged.append(
                    f"{row.tenant_id}/{row.meter}/{row.window_start:%Y-%m-%dT%H}Z "
                    f"({row.identifier}, {row.value}): {row.error}"
                )
        results = [
            _send(client, _event_of(row), report, pacer, policy, sleep, resend=False)
            for row in written
            if row.status == "pending"
        ]
        _record(engine, results)
    report.throttled = pacer.throttled
    report.seconds = time.perf_counter() - started
    return report


def _event_of(row: StripeSyncLedger) -> _Event:
    assert row.id is not None and row.stripe_customer_id is not None
    return _Event(
        row.id,
        row.identifier,
        row.event_name,
        row.stripe_customer_id,
        row.window_start,
        row.value,
    )


def _insert(
    engine: Engine, rows: list[StripeSyncLedger], report: SyncReport
) -> list[StripeSyncLedger]:
    """Commit ``rows`` in one transaction; on a conflict, row by row (a racing sync)."""
    try:
        with session_scope(engine) as session:
            session.add_all(rows)
        return rows
    except IntegrityError:
        pass
    written = []
    for row in rows:
        fresh = StripeSyncLedger.model_validate(row.model_dump(exclude={"id"}))
        try:
            with session_scope(engine) as session:
                session.add(fresh)
            written.append(fresh)
        except IntegrityError:
            report.problems.append(f"{row.identifier}: another sync wrote it first; left to it")
    return written


@dataclass(frozen=True)
class _Result:
    ledger_id: int
    status: str
    error: str | None
    answer: dict[str, Any] | None


def _record(engine: Engine, results: list[_Result]) -> None:
    """Store Stripe's answers. A crash before this leaves the rows pending: the next run
    resends them with the same identifier and idempotency key, so nothing is counted twice."""
    if not results:
        return
    now = utcnow()
    with session_scope(engine) as session:
        # One SELECT for the batch: a session.get per row would flush the previous row's
        # update first, two round trips an event (a fifth of a sync's time, profiled).
        ids = [result.ledger_id for result in results]
        rows = {
            row.id: row
            for row in session.exec(
                select(StripeSyncLedger).where(col(StripeSyncLedger.id).in_(ids))
            ).all()
        }
        for result in results:
            row = rows[result.ledger_id]
            row.attempts += 1
            row.status, row.error = result.status, result.error
            if result.answer is not None:
                row.response = result.answer
            if result.status == "sent":
                row.sent_at = now


def _send(
    client: Any,
    event: _Event,
    report: SyncReport,
    pacer: Pacer,
    policy: RetryPolicy | None,
    sleep: Callable[[float], None],
    *,
    resend: bool,
) -> _Result:
    params = {
        "event_name": event.event_name,
        "identifier": event.identifier,
        "timestamp": int(event.window_start.timestamp()),
        "payload": {CUSTOMER_KEY: event.customer, VALUE_KEY: str(event.value)},
    }
    options = {"idempotency_key": event.identifier}
    status, error, answer = "sent", None, None
    try:
        created = call(
            partial(client.v1.billing.meter_events.create, params, options),
            policy=policy,
            pacer=pacer,
            sleep=sleep,
        )
        answer = created.to_dict()
    except StripeRejected as exc:
        if exc.code == "resource_already_exists" or "already exists" in str(exc):
            # The identifier is ours and the row immutable: Stripe holds this very event.
            error = f"Stripe already had it: {exc}"
        else:
            status, error = "rejected", f"{exc.status} {exc.code or ''}: {exc}".strip()
    except StripeUnavailable as exc:
        status, error = "pending", str(exc)
    where = f"{event.identifier} (value {event.value})"
    if status == "sent":
        report.sent += 1
        report.resent += int(resend)
        report.sent_value[event.event_name] += event.value
    elif status == "rejected":
        report.rejected.append(f"{where}: Stripe refused it: {error}")
    else:
        report.unavailable.append(f"{where}: {error}; left pending, resent next run")
    return _Result(event.ledger_id, status, error, answer)
