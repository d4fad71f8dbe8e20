"""Ops-DB gauges on /metrics: budget remaining per cap, queue depth, dead letters, alerts."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine
from sqlmodel import Session

from llmops.alerts import raise_alert
from llmops.db.models import Job, Tenant
from llmops.gateway.budget import BudgetManager
from llmops.ids import new_id
from llmops.telemetry.metrics import OpsCollector


def _scrape(collector: OpsCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_gauges_reflect_the_ops_db(db_engine: Engine) -> None:
    budgets = BudgetManager(db_engine)
    budgets.set_cap(
        tenant_id="acme", feature_id=None, limit_usd=Decimal("10"), period="month", mode="soft"
    )
    with Session(db_engine) as session:
        for tenant in ("acme", "beta"):
            session.add(Tenant(id=tenant, name=tenant, api_key_hash=new_id("h")))
        session.commit()
        for tenant, status, n in [
            ("acme", "queued", 3),
            ("acme", "dead", 2),
            ("beta", "queued", 1),
        ]:
            for _ in range(n):
                session.add(Job(id=new_id("job"), tenant_id=tenant, feature_id="f", status=status))
        session.commit()
    raise_alert(db_engine, "dlq_growth", "acme", "dead letters grew")

    text = _scrape(OpsCollector(db_engine, caps=budgets.list_caps, ttl_s=0))
    assert (
        'llmops_budget_remaining_usd{mode="soft",period="month",scope="tenant:acme"} 10.0' in text
    )
    assert 'llmops_queue_depth{tenant="acme"} 3.0' in text
    assert 'llmops_queue_depth{tenant="beta"} 1.0' in text
    assert 'llmops_dead_letter_jobs{tenant="acme"} 2.0' in text
    assert 'llmops_alerts_undelivered{kind="dlq_growth"} 1.0' in text
    assert "llmops_ops_metrics_errors_total 0.0" in text


def test_a_failing_read_gives_no_samples_not_a_failed_scrape(db_engine: Engine) -> None:
    collector = OpsCollector(db_engine, ttl_s=0)

    def broken() -> list[object]:
        raise ConnectionError("database is down")

    collector._caps = broken
    text = _scrape(collector)
    assert "llmops_queue_depth" not in text.replace("# HELP llmops_queue_depth", "")
    assert "llmops_ops_metrics_errors_total 1.0" in text
