"""Alerts: one row per condition, delivered once, a broken notifier never breaks anything."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from llmops.alerts import (
    check_provider_errors,
    check_soft_caps,
    deliver_pending,
    list_alerts,
    raise_alert,
)
from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.db.models import RequestLog
from llmops.gateway.budget_types import CapStatus
from llmops.ids import new_id
from tests.integration.conftest import Runner

NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)


def test_same_condition_is_one_alert_delivered_once(db_engine: Engine) -> None:
    first = raise_alert(db_engine, "dlq_growth", "jobs", "dead letters grew by 40")
    again = raise_alert(db_engine, "dlq_growth", "jobs", "dead letters grew by 41")
    other = raise_alert(db_engine, "dlq_growth", "jobs-2", "another queue")
    assert first.new and not again.new and other.new
    assert first.id == again.id != other.id

    sent: list[tuple[str, str]] = []
    report = deliver_pending(db_engine, lambda subject, body: sent.append((subject, body)))
    assert sorted(report.sent) == sorted([first.id, other.id]) and report.failed == []
    assert sent[0][0] == "[llmops] warning: dead letters grew by 40"
    assert "runbook: docs/runbooks/dlq-growth.md" in sent[0][1]
    # Raised again after delivery: counted, not re-sent.
    raise_alert(db_engine, "dlq_growth", "jobs", "dead letters grew by 42")
    assert deliver_pending(db_engine, lambda s, b: sent.append((s, b))).sent == []
    assert len(sent) == 2
    by_key = {a.key: a for a in list_alerts(db_engine)}
    assert by_key["jobs"].occurrences == 3


def test_a_failing_notifier_is_recorded_and_retried(db_engine: Engine) -> None:
    raised = raise_alert(db_engine, "stripe_drift", "cus_1|2026-11-28", "drift of 12 units")

    def down(subject: str, body: str) -> None:
        raise ConnectionError("webhook unreachable")

    report = deliver_pending(db_engine, down)
    assert report.sent == [] and report.failed == [
        (raised.id, "ConnectionError: webhook unreachable")
    ]
    [alert] = list_alerts(db_engine)
    assert alert.delivered_at is None and alert.delivery_attempts == 1
    assert alert.delivery_error == "ConnectionError: webhook unreachable"

    ok: list[str] = []
    assert deliver_pending(db_engine, lambda s, b: ok.append(s)).sent == [raised.id]
    [alert] = list_alerts(db_engine)
    assert alert.delivered_at is not None and alert.delivery_error is None
    # Gives up after max_attempts so one bad alert cannot block the rest forever.
    stuck = raise_alert(db_engine, "stripe_drift", "cus_2|2026-11-28", "drift")
    for _ in range(3):
        deliver_pending(db_engine, down, max_attempts=3)
    assert deliver_pending(db_engine, lambda s, b: None, max_attempts=3).sent == []
    assert stuck.new


def test_unknown_kind_is_refused(db_engine: Engine) -> None:
    with pytest.raises(ValueError, match="unknown alert kind 'typo'"):
        raise_alert(db_engine, "typo", "k", "s")


def _log(engine: Engine, group: str, status: str, n: int, *, fallbacks: int = 0) -> None:
    with Session(engine) as session:
        for _ in range(n):
            session.add(
                RequestLog(
                    request_id=new_id("req"),
                    started_at=NOW - timedelta(minutes=5),
                    ended_at=NOW - timedelta(minutes=5),
                    tenant_id="acme",
                    feature_id="chat",
                    model_group=group,
                    status=status,
                    fallbacks_used=fallbacks,
                )
            )
        session.commit()


def test_provider_error_spike_alerts_per_group_and_hour(db_engine: Engine) -> None:
    _log(db_engine, "chat-small", "ok", 14)
    _log(db_engine, "chat-small", "error", 3)
    _log(db_engine, "chat-small", "ok", 3, fallbacks=1)  # 6/20 = 30% failed or fell back
    _log(db_engine, "chat-large", "ok", 50)
    _log(db_engine, "chat-large", "error", 5)  # 5/55 = 9%: below the threshold
    _log(db_engine, "embed", "error", 5)  # 100% but too few calls to judge

    [raised] = check_provider_errors(db_engine, now=NOW)
    assert raised.new and raised.key == "chat-small|2026-11-28T12:00:00+00:00"
    assert not check_provider_errors(db_engine, now=NOW + timedelta(minutes=5))[0].new
    [alert] = list_alerts(db_engine)
    assert alert.summary.startswith("model group chat-small: 30% of 20 calls")
    assert alert.details == {"model_group": "chat-small", "calls": 20, "failed": 6}


def _cap(mode: str, spent: str, scope: str = "tenant:acme") -> CapStatus:
    return CapStatus(
        id=1,
        scope_key=scope,
        tenant_id="acme",
        feature_id=None,
        period="month",
        mode=mode,
        limit_usd=Decimal("10"),
        window_start=datetime(2026, 11, 1, tzinfo=UTC),
        spent_usd=Decimal(spent),
        reserved_usd=Decimal(0),
    )


def test_soft_caps_alert_at_80_and_100_percent_once_per_window(db_engine: Engine) -> None:
    assert check_soft_caps([_cap("soft", "7.99"), _cap("hard", "9.5", "tenant:b")], db_engine) == []
    [at80] = check_soft_caps([_cap("soft", "8.00")], db_engine)
    assert at80.new and at80.key == "tenant:acme|month|2026-11-01|80"
    assert not check_soft_caps([_cap("soft", "9.00")], db_engine)[0].new
    [at100] = check_soft_caps([_cap("soft", "10.01")], db_engine)
    assert at100.new and at100.key.endswith("|100")
    severities = {a.key[-3:]: a.severity for a in list_alerts(db_engine)}
    assert severities == {"|80": "warning", "100": "critical"}


def test_alerts_list_cli(tmp_path: Path, run_llmops: Runner) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    upgrade(url)
    engine = make_engine(url)
    raise_alert(engine, "dlq_growth", "jobs", "dead letters grew by 40", severity="critical")
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env["LLMOPS_DATABASE_URL"] = url
    result = run_llmops(env, "alerts", "list")
    assert result.returncode == 0, result.stderr
    assert "critical dlq_growth" in result.stdout
    assert "dead letters grew by 40  [pending]" in result.stdout


def test_eval_regressions_alert_once_per_version_and_model(db_engine: Engine) -> None:
    from llmops.alerts import check_eval_runs
    from llmops.db.models import EvalRun

    def run(run_id: str, score: float, minutes: int) -> EvalRun:
        return EvalRun(
            id=run_id,
            suite="triage",
            prompt_name="classify",
            prompt_version=3,
            model_group="chat-small",
            dataset_name="tickets",
            dataset_hash="h",
            status="completed",
            metrics={"score": score},
            started_at=NOW + timedelta(minutes=minutes),
        )

    with Session(db_engine) as session:
        session.add(run("r1", 0.90, 0))
        session.add(run("r2", 0.89, 10))
        session.add(run("r3", 0.80, 20))
        session.commit()

    def summary(run_id: str, score: float, failures: list[str]) -> dict[str, object]:
        return {
            "run_id": run_id,
            "prompt": "classify",
            "version": 3,
            "model_group": "chat-small",
            "score": score,
            "failures": failures,
        }

    assert check_eval_runs(db_engine, "triage", [summary("r2", 0.89, [])]) == []
    [dropped] = check_eval_runs(db_engine, "triage", [summary("r3", 0.80, [])])
    assert dropped.new and dropped.key == "triage|classify@v3|chat-small|drop"
    assert not check_eval_runs(db_engine, "triage", [summary("r3", 0.80, [])])[0].new
    [failing] = check_eval_runs(
        db_engine, "triage", [summary("r3", 0.80, ["accuracy 0.80 < 0.85"])]
    )
    assert failing.new and failing.key.endswith("|threshold")
    alert = next(a for a in list_alerts(db_engine) if a.key.endswith("|threshold"))
    assert alert.summary == (
        "eval triage: classify v3 on chat-small scored 0.800: accuracy 0.80 < 0.85"
    )


def test_stripe_drift_alerts_per_tenant_meter_and_hour(db_engine: Engine) -> None:
    from llmops.alerts import check_stripe_drift
    from llmops.billing.reconcile import Drift

    drift = Drift(
        tenant_id="acme",
        customer="cus_1",
        meter="llm_tokens",
        window_start=NOW.replace(minute=0),
        metered=1200,
        ledger_sent=1200,
        stripe=1000,
        flagged=0,
    )
    [first] = check_stripe_drift(db_engine, [drift])
    assert first.new and first.key == "acme|llm_tokens|2026-11-28T12:00:00+00:00"
    assert not check_stripe_drift(db_engine, [drift])[0].new
    [alert] = list_alerts(db_engine)
    assert alert.summary.startswith("Stripe drift for acme llm_tokens at 2026-11-28T12:00")
    assert "-200 units (metered 1200, sent 1200, Stripe 1000)" in alert.summary


def test_dead_letter_growth_alerts_once_an_hour(db_engine: Engine) -> None:
    from llmops.alerts import check_dead_letters
    from llmops.db.models import Job, Tenant

    with Session(db_engine) as session:
        for tenant in ("acme", "beta"):
            session.add(Tenant(id=tenant, name=tenant))
        session.commit()
        for i in range(12):
            session.add(
                Job(
                    id=new_id("job"),
                    tenant_id="acme" if i < 9 else "beta",
                    feature_id="f",
                    status="dead",
                    completed_at=NOW - timedelta(minutes=10),
                )
            )
        session.add(
            Job(
                id=new_id("job"),
                tenant_id="acme",
                feature_id="f",
                status="dead",
                completed_at=NOW - timedelta(hours=3),
            )
        )
        session.commit()
    assert check_dead_letters(db_engine, threshold=13, now=NOW) == []
    [raised] = check_dead_letters(db_engine, threshold=10, now=NOW)
    assert raised.new and raised.key == "jobs|2026-11-28T12:00:00+00:00"
    assert not check_dead_letters(db_engine, threshold=10, now=NOW + timedelta(minutes=5))[0].new
    [alert] = list_alerts(db_engine)
    assert alert.summary == "12 jobs dead-lettered in the last 60 min"
    assert alert.details == {"per_tenant": {"acme": 9, "beta": 3}}
