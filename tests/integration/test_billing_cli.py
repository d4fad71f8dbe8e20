"""``llmops billing`` as a user runs it, including a sync killed halfway and rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import stripe
from sqlalchemy import Engine

from llmops.billing.setup import run_setup
from llmops.db.engine import session_scope
from llmops.db.models import Tenant
from llmops.ids import utcnow
from llmops.metering.plans import load_billing_config
from llmops.metering.rollup import run_rollup
from llmops.stripe_sim import StripeSim

from .billing_helpers import add_tenants, ledger_rows, log_rows, usage_totals, write_billing

LLMOPS = Path(sys.executable).parent / "llmops"
REPO = Path(__file__).resolve().parents[2]


def _env(
    cli_env: Callable[[str], dict[str, str]], db_url: str, billing: Path, sim: StripeSim
) -> dict[str, str]:
    env = cli_env("http://127.0.0.1:9/v1")
    env |= {
        "LLMOPS_DATABASE_URL": db_url,
        "LLMOPS_BILLING_CONFIG": str(billing),
        "LLMOPS_STRIPE_API_KEY": "sk_test_cli",
        "LLMOPS_STRIPE_API_BASE": sim.url,
    }
    return env


def _stripe_totals(engine: Engine, sim: StripeSim, billing: Any) -> dict[tuple[str, str], int]:
    out = {}
    with session_scope(engine) as session:
        for tenant in ("acme", "globex"):
            row = session.get(Tenant, tenant)
            assert row is not None and row.stripe_customer_id
            plan = billing.tenants[tenant].plan
            for meter in billing.plans[plan].meters:
                event = billing.meters[meter].event_name
                cid = row.stripe_customer_id
                total = sim.call(lambda s, e=event, c=cid: s.total(e, c, 0, 2**40))
                if total:
                    out[(tenant, meter)] = total
    return out


def test_sync_killed_halfway_then_rerun_leaves_no_duplicate_and_no_gap(
    db_engine: Engine,
    migrated_db_url: str,
    tmp_path: Path,
    cli_env: Callable[[str], dict[str, str]],
    run_llmops: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    add_tenants(db_engine, "acme", "globex")
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=14)
    rows = []
    for hour in range(12):
        for tenant in ("acme", "globex"):
            rows.append(
                {
                    "started_at": start + timedelta(hours=hour),
                    "tenant_id": tenant,
                    "input_tokens": 10 + hour,
                    "cost_usd": f"0.00{hour + 1}",
                }
            )
    log_rows(db_engine, rows)
    billing_file = write_billing(tmp_path)
    billing = load_billing_config(billing_file)
    with StripeSim() as sim:
        client = stripe.StripeClient(
            "sk_test_cli", base_addresses={"api": sim.url}, max_network_retries=0
        )
        run_setup(db_engine, billing, client)
        run_rollup(db_engine, tmp_path / "wh.duckdb", billing, settle=timedelta(0))
        expected = usage_totals(db_engine)
        assert len(expected) == 3
        env = _env(cli_env, migrated_db_url, billing_file, sim)
        sim.set_latency(0.15)
        proc = subprocess.Popen(
            [str(LLMOPS), "billing", "sync", "--settle-minutes", "0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while sim.stats()["events"] < 8 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        halfway = sim.stats()["events"]
        assert 8 <= halfway < 36  # 12 hours x 3 (tenant, meter) pairs
        sim.set_latency(0)
        rerun = run_llmops(env, "billing", "sync", "--settle-minutes", "0")
        assert rerun.returncode == 0, rerun.stderr
        assert _stripe_totals(db_engine, sim, billing) == expected
        sent = ledger_rows(db_engine, "sent")
        assert len(sent) == 36 == sim.stats()["events"]  # no duplicate
        assert len({r.identifier for r in sent}) == 36
        assert ledger_rows(db_engine, "pending") == []
        again = run_llmops(env, "billing", "sync", "--settle-minutes", "0")
        assert again.returncode == 0 and "0 events accepted" in again.stdout
        rec = run_llmops(env, "billing", "reconcile", "--days", "2")
        assert rec.returncode == 0, rec.stdout + rec.stderr
        assert "no drift" in rec.stdout


def test_billing_commands_report_bad_input_with_exit_codes(
    db_engine: Engine,
    migrated_db_url: str,
    tmp_path: Path,
    cli_env: Callable[[str], dict[str, str]],
    run_llmops: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    data = {
        "meters": {"tok": {"event_name": "tok", "display_name": "T", "measure": "input_tokens"}},
        "plans": {
            "p": {"meters": {"tok": {"unit_price_usd": "1"}, "ghost": {"unit_price_usd": "1"}}}
        },
        "tenants": {"acme": {"plan": "p"}},
    }
    billing_file = write_billing(tmp_path, data)
    add_tenants(db_engine, "acme")
    log_rows(
        db_engine,
        [
            {"started_at": utcnow() - timedelta(hours=2), "tenant_id": "acme"},
            {"started_at": utcnow() - timedelta(hours=2), "tenant_id": "acme", "input_tokens": -1},
        ],
    )
    with StripeSim() as sim:
        env = _env(cli_env, migrated_db_url, billing_file, sim)
        setup = run_llmops(env, "billing", "setup")
        assert setup.returncode == 2
        assert "plans.p.meters.ghost: unknown meter 'ghost'" in setup.stderr
        assert "meter tok:" in setup.stdout and "customer of acme:" in setup.stdout
        again = run_llmops(env, "billing", "setup")
        assert "(verified)" in again.stdout and "(created)" not in again.stdout
        rollup = run_llmops(env, "billing", "rollup", "--settle-minutes", "0")
        assert rollup.returncode == 2, rollup.stderr
        assert "negative input_tokens" in rollup.stderr
        sync = run_llmops(env, "billing", "sync", "--settle-minutes", "0")
        assert sync.returncode == 0, sync.stderr
        assert "1 events accepted" in sync.stdout
        assert sim.stats()["events"] == 1
        env["LLMOPS_STRIPE_API_KEY"] = ""
        nokey = run_llmops(env, "billing", "sync")
        assert nokey.returncode == 1 and "LLMOPS_STRIPE_API_KEY" in nokey.stderr
