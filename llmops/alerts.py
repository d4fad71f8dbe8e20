"""Operational alerts: recorded once per condition in the ops DB, delivered by a notifier.

An alert is identified by ``kind`` and ``key``: the soft cap of ``tenant:acme`` crossing
80% in the month starting 2026-11-01 is ``("soft_cap", "tenant:acme|month|2026-11-01|80")``.
Raising the same condition again bumps its count and ``last_seen_at``; it is delivered once.

Delivery is pluggable (the Prefect flow passes a webhook notification block's ``notify``);
a failing notifier never raises out of :func:`deliver_pending`: the error is recorded on
the alert, retried on the next run up to ``max_attempts``, and returned for reporting.

Detectors look at the ops DB and raise what they find; each is safe to run every few
minutes. Detectors for other subsystems (dead letters, Stripe drift, eval regressions)
live with them and call :func:`raise_alert`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.db.models import Alert, RequestLog
from llmops.ids import utcnow

log = logging.getLogger(__name__)

KINDS = ("soft_cap", "eval_regression", "dlq_growth", "stripe_drift", "provider_errors")
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Raised:
    """The outcome of :func:`raise_alert`: ``new`` is false for a repeat of a known one."""

    id: int
    kind: str
    key: str
    new: bool


@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def raise_alert(
    engine: Engine,
    kind: str,
    key: str,
    summary: str,
    *,
    severity: str = "warning",
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Raised:
    """Record the condition ``(kind, key)``; a repeat only bumps its count and last seen."""
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r} (known: {', '.join(KINDS)})")
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r} (known: {', '.join(SEVERITIES)})")
    now = now or utcnow()
    for _ in range(2):  # a concurrent insert of the same condition turns into a repeat
        with Session(engine) as session:
            existing = session.exec(
                select(Alert).where(Alert.kind == kind, Alert.key == key)
            ).first()
            if existing is not None:
                session.execute(
                    update(Alert)
                    .where(col(Alert.id) == existing.id)
                    .values(occurrences=Alert.occurrences + 1, last_seen_at=now)
                )
                session.commit()
                assert existing.id is not None
                return Raised(existing.id, kind, key, new=False)
            alert = Alert(
                kind=kind,
                key=key,
                severity=severity,
                summary=summary[:500],
                details=details,
                first_seen_at=now,
                last_seen_at=now,
            )
            session.add(alert)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                continue
            assert alert.id is not None
            log.warning("alert %s [%s] %s", kind, key, summary)
            return Raised(alert.id, kind, key, new=True)
    raise RuntimeError(f"could not record alert {kind} {key}")  # pragma: no cover


def format_alert(alert: Alert) -> tuple[str, str]:
    """Subject and body of the notification for ``alert``."""
    subject = f"[llmops] {alert.severity}: {alert.summary}"
    lines = [
        alert.summary,
        "",
        f"kind: {alert.kind}",
        f"condition: {alert.key}",
        f"first seen: {alert.first_seen_at.isoformat()}",
        f"runbook: docs/runbooks/{alert.kind.replace('_', '-')}.md",
    ]
    if alert.details:
        lines += ["", json.dumps(alert.details, indent=2, sort_keys=True, default=str)]
    return subject, "\n".join(lines)


def deliver_pending(
    engine: Engine,
    notify: Callable[[str, str], None],
    *,
    max_attempts: int = 5,
    now: datetime | None = None,
) -> DeliveryReport:
    """Send every undelivered alert through ``notify(subject, body)``, oldest first."""
    report = DeliveryReport()
    with Session(engine) as session:
        pending = session.exec(
            select(Alert)
            .where(col(Alert.delivered_at).is_(None), Alert.delivery_attempts < max_attempts)
            .order_by(col(Alert.id))
        ).all()
        for alert in pending:
            assert alert.id is not None
            subject, body = format_alert(alert)
            try:
                notify(subject, body)
            except Exception as exc:  # a broken webhook must never break the pipeline
                error = f"{type(exc).__name__}: {exc}"[:2000]
                alert.delivery_attempts += 1
                alert.delivery_error = error
                report.failed.append((alert.id, error))
                log.warning("alert %s not delivered: %s", alert.id, error)
            else:
                alert.delivery_attempts += 1
                alert.delivered_at = now or utcnow()
                alert.delivery_error = None
                report.sent.append(alert.id)
            session.add(alert)
            session.commit()
    return report


def list_alerts(engine: Engine, *, limit: int = 100) -> list[Alert]:
    """The most recently seen alerts first."""
    with Session(engine) as session:
        return list(
            session.exec(select(Alert).order_by(col(Alert.last_seen_at).desc()).limit(limit))
        )


# --- detectors ---------------------------------------------------------------------------


def check_provider_errors(
    engine: Engine,
    *,
    window: timedelta = timedelta(minutes=15),
    threshold: float = 0.2,
    min_calls: int = 20,
    now: datetime | None = None,
) -> list[Raised]:
    """Alert when a model group's error rate over the last ``window`` reaches ``threshold``.

    Counts requests that failed after every retry and fallback, and requests that needed a
    fallback (the provider failed even if the caller did not see it). One alert per model
    group per hour of the window's end, so a long outage is one alert an hour, not one a run.
    """
    now = now or utcnow()
    since = now - window
    calls: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    with Session(engine) as session:
        rows = session.exec(
            select(RequestLog.model_group, RequestLog.status, RequestLog.fallbacks_used).where(
                col(RequestLog.started_at) >= since, col(RequestLog.cache_hit).is_(False)
            )
        ).all()
    for group, status, fallbacks in rows:
        calls[group] += 1
        if status != "ok" or fallbacks:
            failed[group] += 1
    raised = []
    for group, n in sorted(calls.items()):
        rate = failed[group] / n
        if n >= min_calls and rate >= threshold:
            hour = now.replace(minute=0, second=0, microsecond=0).isoformat()
            raised.append(
                raise_alert(
                    engine,
                    "provider_errors",
                    f"{group}|{hour}",
                    f"model group {group}: {rate:.0%} of {n} calls failed or fell back "
                    f"in the last {int(window.total_seconds() // 60)} min",
                    severity="critical" if rate >= 0.5 else "warning",
                    details={"model_group": group, "calls": n, "failed": failed[group]},
                    now=now,
                )
            )
    return raised


def check_soft_caps(
    statuses: Iterable[Any], engine: Engine, *, now: datetime | None = None
) -> list[Raised]:
    """Alert for each soft cap whose settled spend reached 80% or 100% of its limit.

    ``statuses`` are the gateway's ``CapStatus`` objects (``BudgetManager.list_caps()``);
    the key holds the cap's window, so the next window alerts again.
    """
    raised = []
    for cap in statuses:
        if cap.mode != "soft" or cap.limit_usd <= 0:
            continue
        for threshold in (100, 80):
            if cap.used_pct >= threshold:
                raised.append(
                    raise_alert(
                        engine,
                        "soft_cap",
                        f"{cap.scope_key}|{cap.period}|{cap.window_start.date()}|{threshold}",
                        f"soft cap {cap.scope_key} ({cap.period}) at {cap.used_pct}% "
                        f"of ${cap.limit_usd}",
                        severity="critical" if threshold == 100 else "warning",
                        details={
                            "scope": cap.scope_key,
                            "spent_usd": str(cap.spent_usd),
                            "limit_usd": str(cap.limit_usd),
                        },
                        now=now,
                    )
                )
                break
    return raised


def check_eval_runs(
    engine: Engine, suite: str, runs: Iterable[dict[str, Any]], *, max_drop: float = 0.05
) -> list[Raised]:
    """Alert for nightly eval runs that fail an absolute threshold or fell behind the
    previous completed run of the same prompt version and model group by ``max_drop``.

    ``runs`` are the summaries the nightly job returns (``run_id``, ``prompt``,
    ``version``, ``model_group``, ``score``, ``failures``). One alert per (suite, prompt
    version, model group, reason): a version that stays bad is not re-sent every night.
    """
    from llmops.db.models import EvalRun

    raised = []
    for run in runs:
        reasons = list(run.get("failures") or [])
        with Session(engine) as session:
            previous = session.exec(
                select(EvalRun)
                .where(
                    EvalRun.suite == suite,
                    EvalRun.status == "completed",
                    EvalRun.prompt_version == run["version"],
                    EvalRun.model_group == run["model_group"],
                    EvalRun.id != run["run_id"],
                )
                .order_by(col(EvalRun.started_at).desc())
            ).first()
        before = (previous.metrics or {}).get("score") if previous is not None else None
        drop = None
        if before is not None and run["score"] is not None:
            drop = float(before) - float(run["score"])
            if drop > max_drop:
                reasons.append(f"score fell {drop:.3f} since run {previous.id}")  # type: ignore[union-attr]
        if not reasons:
            continue
        kind = "threshold" if run.get("failures") else "drop"
        raised.append(
            raise_alert(
                engine,
                "eval_regression",
                f"{suite}|{run['prompt']}@v{run['version']}|{run['model_group']}|{kind}",
                f"eval {suite}: {run['prompt']} v{run['version']} on {run['model_group']} "
                f"scored {run['score']:.3f}: {reasons[0]}",
                severity="critical",
                details={"run_id": run["run_id"], "reasons": reasons, "previous_score": before},
            )
        )
    return raised


def check_stripe_drift(engine: Engine, drifts: Iterable[Any]) -> list[Raised]:
    """One alert per drifting (tenant, meter, hour) from a reconciliation's ``drifts``."""
    raised = []
    for d in drifts:
        window = d.window_start.isoformat()
        raised.append(
            raise_alert(
                engine,
                "stripe_drift",
                f"{d.tenant_id}|{d.meter}|{window}",
                f"Stripe drift for {d.tenant_id} {d.meter} at {window}: {d.drift:+d} units "
                f"(metered {d.metered}, sent {d.ledger_sent}, Stripe {d.stripe})",
                severity="critical",
                details={
                    "customer": d.customer,
                    "metered": d.metered,
                    "ledger_sent": d.ledger_sent,
                    "stripe": d.stripe,
                    "flagged": d.flagged,
                },
            )
        )
    return raised


def check_dead_letters(
    engine: Engine,
    *,
    window: timedelta = timedelta(hours=1),
    threshold: int = 10,
    now: datetime | None = None,
) -> list[Raised]:
    """Alert when ``threshold`` or more jobs were dead-lettered in the last ``window``.

    One alert per hour of the window's end (a steady stream of dead letters is one alert an
    hour), with the count per tenant in the details.
    """
    from llmops.db.models import Job

    now = now or utcnow()
    with Session(engine) as session:
        rows = session.exec(
            select(Job.tenant_id).where(Job.status == "dead", col(Job.completed_at) >= now - window)
        ).all()
    if len(rows) < threshold:
        return []
    per_tenant: dict[str, int] = defaultdict(int)
    for tenant in rows:
        per_tenant[tenant] += 1
    hour = now.replace(minute=0, second=0, microsecond=0).isoformat()
    return [
        raise_alert(
            engine,
            "dlq_growth",
            f"jobs|{hour}",
            f"{len(rows)} jobs dead-lettered in the last {int(window.total_seconds() // 60)} min",
            severity="critical" if len(rows) >= 10 * threshold else "warning",
            details={"per_tenant": dict(sorted(per_tenant.items()))},
            now=now,
        )
    ]
