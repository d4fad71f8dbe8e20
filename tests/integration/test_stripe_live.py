"""The same setup -> sync -> reconcile run against the stand-in and, when
``LLMOPS_STRIPE_TEST_API_KEY=sk_test_...`` is set, against Stripe's test mode (skipped
otherwise). Tenants get a random suffix so reruns on one Stripe account do not collide."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine

from llmops.billing.reconcile import run_reconcile
from llmops.billing.setup import run_setup
from llmops.billing.sync import run_sync
from llmops.ids import utcnow
from llmops.metering.plans import load_billing_config
from llmops.metering.rollup import run_rollup
from llmops.stripe_sim import StripeSim

from .billing_helpers import BILLING, add_tenants, log_rows, usage_totals, write_billing

LIVE_ENV = "LLMOPS_STRIPE_TEST_API_KEY"


@pytest.fixture(params=["stand-in", "live"])
def stripe_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "live":
        key = os.environ.get(LIVE_ENV, "")
        if not key:
            pytest.skip(f"set {LIVE_ENV}=sk_test_... to run against Stripe's test mode")
        if not key.startswith("sk_test_"):
            pytest.fail(f"{LIVE_ENV} must be a test-mode key (sk_test_...)")
        yield stripe.StripeClient(key, max_network_retries=0)
        return
    with StripeSim() as sim:
        yield stripe.StripeClient(
            "sk_test_standin", base_addresses={"api": sim.url}, max_network_retries=0
        )


def test_setup_sync_and_reconcile_agree_with_stripe(
    stripe_client: Any, db_engine: Engine, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(3)
    acme, globex = f"acme-{suffix}", f"globex-{suffix}"
    data = {**BILLING, "tenants": {acme: {"plan": "tokens"}, globex: {"plan": "outcomes"}}}
    billing = load_billing_config(write_billing(tmp_path, data))
    add_tenants(db_engine, acme, globex)
    hour = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    log_rows(db_engine, [{"started_at": hour, "tenant_id": t} for t in (acme, acme, globex)])
    setup = run_setup(db_engine, billing, stripe_client)
    assert setup.problems == [] and set(setup.customers) == {acme, globex}
    assert {
        action for _, action in run_setup(db_engine, billing, stripe_client).meters.values()
    } == {"verified"}
    run_rollup(db_engine, tmp_path / "wh.duckdb", billing, settle=timedelta(0))
    report = run_sync(db_engine, billing, stripe_client, settle=timedelta(0))
    assert report.ok and report.sent == 3
    assert usage_totals(db_engine) == {
        (acme, "input_tokens"): 200,
        (acme, "output_tokens"): 40,
        (globex, "cost"): 34,
    }
    # Stripe's summaries are eventually consistent: give test mode a minute.
    deadline = time.monotonic() + 90
    while True:
        rec = run_reconcile(
            db_engine, billing, stripe_client, start=hour, end=hour + timedelta(hours=1)
        )
        if rec.ok or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert rec.ok, rec.markdown()
    assert rec.totals["input_tokens"]["stripe"] == 200
