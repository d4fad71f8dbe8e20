"""Metering to Stripe end to end on SQLite and Postgres: rollups, the gate, setup, sync with
deltas, retries and bad input, reconciliation; against the local Stripe stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, update
from sqlmodel import col, select

from llmops.billing.client import Pacer, RetryPolicy
from llmops.billing.reconcile import run_reconcile
from llmops.billing.setup import run_setup
from llmops.billing.sync import run_sync
from llmops.db.engine import session_scope
from llmops.db.models import MeteringReject, Tenant, UsageRollup
from llmops.ids import utcnow
from llmops.metering.actions import record_action_outcome
from llmops.metering.plans import BillingConfig, load_billing_config
from llmops.metering.quality import DataQualityError
from llmops.metering.rollup import run_rollup
from llmops.stripe_sim import StripeSim

from .billing_helpers import (
    add_tenants,
    ledger_rows,
    log_rows,
    usage_totals,
    write_billing,
)

NOW = utcnow().replace(minute=30, second=0, microsecond=0)
H1 = NOW.replace(minute=0) - timedelta(hours=5)
H2 = H1 + timedelta(hours=1)
FAST = RetryPolicy(max_attempts=30, base_delay_s=0.01, max_delay_s=0.05)


@dataclass
class Env:
    engine: Engine
    billing: BillingConfig
    sim: StripeSim
    client: Any
    warehouse: Path

    def rollup(self, now: datetime = NOW) -> Any:
        return run_rollup(self.engine, self.warehouse, self.billing, settle=timedelta(0), now=now)

    def sync(self, **options: Any) -> Any:
        options.setdefault("policy", FAST)
        return run_sync(
            self.engine, self.billing, self.client, now=NOW, settle=timedelta(0), **options
        )

    def stripe_total(self, tenant: str, meter_key: str) -> int:
        with session_scope(self.engine) as session:
            customer = session.get(Tenant, tenant)
            assert customer is not None and customer.stripe_customer_id
            cid = customer.stripe_customer_id
        event = self.billing.meters[meter_key].event_name
        return self.sim.call(lambda s: s.total(event, cid, 0, 2**40))


@pytest.fixture
def env(db_engine: Engine, tmp_path: Path) -> Iterator[Env]:
    add_tenants(db_engine, "acme", "globex")
    billing = load_billing_config(write_billing(tmp_path))
    with StripeSim() as sim:
        client = stripe.StripeClient(
            "sk_test_local", base_addresses={"api": sim.url}, max_network_retries=0
        )
        report = run_setup(db_engine, billing, client)
        assert report.problems == []
        yield Env(db_engine, billing, sim, client, tmp_path / "wh.duckdb")


def _rows(hour: datetime, n: int, tenant: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"started_at": hour + timedelta(minutes=i), "tenant_id": tenant, **extra} for i in range(n)
    ]


def _rollup_values(engine: Engine) -> list[tuple[Any, ...]]:
    with session_scope(engine) as session:
        rows = session.exec(select(UsageRollup).order_by(col(UsageRollup.id))).all()
        return sorted(
            tuple(v for k, v in r.model_dump().items() if k not in ("id", "updated_at"))
            for r in rows
        )


def test_rollup_then_sync_makes_stripe_equal_the_rollups_and_reruns_change_nothing(
    env: Env,
) -> None:
    log_rows(env.engine, _rows(H1, 4, "acme") + _rows(H2, 3, "acme", input_tokens=50))
    log_rows(env.engine, _rows(H1, 2, "globex", cost_usd="0.0012345"))
    bad = log_rows(
        env.engine,
        [
            {"started_at": H1, "tenant_id": "", "input_tokens": 7},
            {"started_at": H2, "tenant_id": "acme", "output_tokens": -3},
        ],
    )
    stats = env.rollup()
    assert stats.gate is not None and stats.gate.success
    assert {r["request_id"]: r["reason"] for r in stats.rejects} == {
        bad[0]: "missing tenant",
        bad[1]: "negative output_tokens",
    }
    with session_scope(env.engine) as session:
        assert len(session.exec(select(MeteringReject)).all()) == 2
        hourly = session.exec(
            select(UsageRollup).where(col(UsageRollup.granularity) == "hour")
        ).all()
        daily = session.exec(select(UsageRollup).where(col(UsageRollup.granularity) == "day")).all()
    acme_h1 = next(r for r in hourly if r.tenant_id == "acme" and r.window_start == H1)
    assert (acme_h1.calls, acme_h1.input_tokens, acme_h1.output_tokens) == (4, 400, 80)
    assert sum(r.calls for r in daily) == sum(r.calls for r in hourly) == 9
    # Metered: acme 4*100 + 3*50 input tokens, 7*20 output; globex 2 * 0.0012345 * 1.25 USD.
    assert usage_totals(env.engine) == {
        ("acme", "input_tokens"): 550,
        ("acme", "output_tokens"): 140,
        ("globex", "cost"): 3086,
    }
    before = _rollup_values(env.engine)
    again = env.rollup()
    assert again.hours == 0 and _rollup_values(env.engine) == before

    report = env.sync()
    assert report.ok and report.sent == 5 and not report.skipped
    assert env.stripe_total("acme", "input_tokens") == 550
    assert env.stripe_total("acme", "output_tokens") == 140
    assert env.stripe_total("globex", "cost") == 3086
    assert {r.status for r in ledger_rows(env.engine)} == {"sent"}
    rerun = env.sync()
    assert rerun.sent == 0 and env.sim.stats()["events"] == 5

    rec = run_reconcile(env.engine, env.billing, env.client, start=NOW - timedelta(days=1), end=NOW)
    assert rec.ok and rec.checked == 5
    # A Stripe that refuses hourly grouping is asked one hour at a time instead.
    env.sim.fail_next(400, 1, "/v1/billing/meters/")
    fallback = run_reconcile(
        env.engine, env.billing, env.client, start=NOW - timedelta(days=1), end=NOW
    )
    assert fallback.ok and fallback.totals == rec.totals
    assert rec.totals["input_tokens"] == {
        "metered": 550,
        "ledger_sent": 550,
        "stripe": 550,
        "flagged": 0,
    }


def test_late_rows_after_a_sync_reopen_their_hour_and_the_next_sync_sends_exactly_the_delta(
    env: Env,
) -> None:
    log_rows(env.engine, _rows(H1, 3, "acme"))
    env.rollup()
    assert env.sync().sent == 2
    log_rows(env.engine, _rows(H1, 2, "acme", input_tokens=7, logged_at=NOW))
    stats = env.rollup()
    assert stats.hours == 1
    report = env.sync()
    assert report.sent == 2
    deltas = {r.identifier: r.value for r in ledger_rows(env.engine) if r.seq == 1}
    assert deltas == {
        f"llmops-acme-input_tokens-{H1:%Y%m%d%H}-1": 14,
        f"llmops-acme-output_tokens-{H1:%Y%m%d%H}-1": 40,
    }
    assert env.stripe_total("acme", "input_tokens") == 314
    assert env.stripe_total("acme", "output_tokens") == 100


def test_a_hand_edited_rollup_fails_the_gate_and_no_event_is_sent(env: Env) -> None:
    log_rows(env.engine, _rows(H1, 3, "acme"))
    env.rollup()
    with session_scope(env.engine) as session:
        session.execute(
            update(UsageRollup)
            .where(col(UsageRollup.granularity) == "hour")
            .values(input_tokens=UsageRollup.input_tokens + 1)
        )
    with pytest.raises(DataQualityError, match="input_tokens_diff") as caught:
        env.sync()
    assert not caught.value.result.success
    assert env.sim.stats()["events"] == 0
    assert ledger_rows(env.engine) == []


def test_a_429_storm_slows_the_sync_down_and_it_completes(env: Env) -> None:
    for hour in range(6):
        log_rows(env.engine, _rows(H1 - timedelta(hours=hour), 1, "acme"))
    env.rollup()
    env.sim.set_fault_rate({429: 0.5})
    pacer = Pacer(max_gap_s=0.05)
    report = env.sync(pacer=pacer)
    assert report.ok and report.sent == 12
    assert pacer.throttled > 0 and report.throttled == pacer.throttled
    assert env.sim.stats()["answered"]["429"] >= pacer.throttled
    assert env.stripe_total("acme", "input_tokens") == 600


def test_5xx_answers_are_retried_and_nothing_is_counted_twice(env: Env) -> None:
    log_rows(env.engine, _rows(H1, 1, "acme"))
    env.rollup()
    env.sim.fail_next(500, 3, "/v1/billing/meter_events")
    report = env.sync()
    assert report.ok and report.sent == 2
    assert env.stripe_total("acme", "input_tokens") == 100


def test_bad_input_is_reported_per_event_and_the_rest_of_the_batch_proceeds(
    env: Env,
) -> None:
    add_tenants(env.engine, "initech", "hooli")
    with session_scope(env.engine) as session:
        hooli = session.get(Tenant, "hooli")
        assert hooli is not None
        hooli.plan, hooli.stripe_customer_id = "tokens", "cus_does_not_exist"
        initech = session.get(Tenant, "initech")
        assert initech is not None
        initech.plan = "tokens"  # no Stripe customer
    log_rows(env.engine, _rows(H1, 1, "acme") + _rows(H1, 1, "hooli") + _rows(H1, 1, "initech"))
    env.rollup()
    report = env.sync()
    assert report.sent == 2
    assert len(report.rejected) == 2 and all("cus_does_not_exist" in r for r in report.rejected)
    assert any("hooli" in r for r in report.rejected)
    assert len(report.skipped) == 2 and all("initech" in s for s in report.skipped)
    rejected = ledger_rows(env.engine, "rejected")
    assert {r.tenant_id for r in rejected} == {"hooli"}
    assert all(r.sent_at is None and "No such customer" in (r.error or "") for r in rejected)
    assert env.stripe_total("acme", "input_tokens") == 100
    # Refused amounts are not counted: the next run tries them again, under a new seq.
    again = env.sync()
    assert len(again.rejected) == 2 and again.sent == 0
    assert {r.seq for r in ledger_rows(env.engine, "rejected")} == {0, 1}


def test_usage_too_old_for_stripe_is_flagged_for_an_invoice_adjustment(env: Env) -> None:
    old = H1 - timedelta(days=36)
    log_rows(env.engine, _rows(old, 2, "acme"))
    env.rollup()
    report = env.sync()
    assert report.sent == 0 and len(report.flagged) == 2
    assert all("35-day" in f for f in report.flagged)
    flagged = ledger_rows(env.engine, "adjust")
    assert sorted(r.value for r in flagged) == [40, 200]
    assert env.sim.stats()["events"] == 0
    assert env.sync().flagged == []  # flagged once, not every run
    rec = run_reconcile(
        env.engine, env.billing, env.client, start=old - timedelta(hours=1), end=NOW
    )
    assert rec.ok and rec.totals["input_tokens"]["flagged"] == 200


def test_reconcile_reports_drift_when_stripe_disagrees(env: Env) -> None:
    log_rows(env.engine, _rows(H1, 2, "acme"))
    env.rollup()
    env.sync()
    # An event sent behind llmops's back (someone else's integration): Stripe now differs.
    with session_scope(env.engine) as session:
        tenant = session.get(Tenant, "acme")
        assert tenant is not None
        customer = tenant.stripe_customer_id
    env.client.v1.billing.meter_events.create(
        {
            "event_name": "t_input_tokens",
            "payload": {"stripe_customer_id": customer, "value": "5"},
            "timestamp": int(H1.timestamp()) + 10,
        }
    )
    rec = run_reconcile(env.engine, env.billing, env.client, start=NOW - timedelta(days=1), end=NOW)
    assert not rec.ok
    assert rec.table() == [
        {
            "tenant": "acme",
            "customer": customer,
            "meter": "input_tokens",
            "hour": f"{H1:%Y-%m-%dT%H:00Z}",
            "metered": 200,
            "ledger_sent": 200,
            "stripe": 205,
            "flagged": 0,
            "drift": 5,
        }
    ]


def test_successful_actions_are_billed_in_the_hour_of_their_outcome(env: Env) -> None:
    log_rows(env.engine, _rows(H1, 2, "globex", action_id="a1", cost_usd="0.001"))
    with session_scope(env.engine) as session:
        record_action_outcome(session, "globex", "a1", "success", "job", at=H1)
        record_action_outcome(session, "globex", "a2", "failure", "api", at=H1)
    env.rollup()
    assert usage_totals(env.engine) == {("globex", "actions"): 1, ("globex", "cost"): 2500}
    assert env.sync().sent == 2
    assert env.stripe_total("globex", "actions") == 1
