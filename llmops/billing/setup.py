"""``llmops billing setup``: create or verify the Stripe meters and customers (idempotent).

Meters are matched by ``event_name`` among the active meters; a match with a different
aggregation or payload keys is reported, never changed (Stripe allows changing only the
display name). Customers are matched by the tenant's stored customer id, then by the
``llmops_tenant_id`` metadata of existing customers, and created otherwise (with an
idempotency key per tenant); the id is stored on the tenant's row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select

from llmops.billing.client import Pacer, StripeRejected, call
from llmops.db.engine import session_scope
from llmops.db.models import Tenant
from llmops.metering.plans import BillingConfig

__all__ = ["SetupReport", "find_meters", "run_setup"]

CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"


@dataclass
class SetupReport:
    """What setup found, created and could not fix."""

    meters: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (id, action)
    customers: dict[str, tuple[str, str]] = field(default_factory=dict)  # tenant -> (id, action)
    problems: list[str] = field(default_factory=list)


def find_meters(client: Any, pacer: Pacer | None = None) -> dict[str, dict[str, Any]]:
    """Active Stripe meters by event name."""
    page = call(
        lambda: client.v1.billing.meters.list({"status": "active", "limit": 100}), pacer=pacer
    )
    return {m["event_name"]: m.to_dict() for m in page.auto_paging_iter()}


def run_setup(engine: Engine, billing: BillingConfig, client: Any) -> SetupReport:
    """Make Stripe hold every meter of ``billing`` and a customer for every billed tenant."""
    report = SetupReport(problems=list(billing.problems))
    existing = find_meters(client)
    for key, spec in billing.meters.items():
        found = existing.get(spec.event_name)
        if found is None:
            meter_params = {
                "display_name": spec.display_name,
                "event_name": spec.event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": CUSTOMER_KEY, "type": "by_id"},
                "value_settings": {"event_payload_key": VALUE_KEY},
            }
            try:
                meter = call(partial(client.v1.billing.meters.create, meter_params))
            except StripeRejected as exc:
                report.problems.append(f"meter {key}: Stripe refused to create it: {exc}")
                continue
            report.meters[key] = (meter["id"], "created")
            continue
        issues = []
        if found["default_aggregation"]["formula"] != "sum":
            issues.append(f"aggregation {found['default_aggregation']['formula']} (want sum)")
        if found["customer_mapping"]["event_payload_key"] != CUSTOMER_KEY:
            issues.append("customer payload key is not stripe_customer_id")
        if found["value_settings"]["event_payload_key"] != VALUE_KEY:
            issues.append("value payload key is not value")
        if issues:
            report.problems.append(
                f"meter {key} ({found['id']}, event {spec.event_name}): " + "; ".join(issues)
            )
        report.meters[key] = (found["id"], "verified")
    _customers(engine, billing, client, report)
    return report


def _customers(engine: Engine, billing: BillingConfig, client: Any, report: SetupReport) -> None:
    with session_scope(engine) as session:
        rows = {t.id: t for t in session.exec(select(Tenant)).all()}
        wanted: dict[str, str | None] = {}
        for tenant_id, listed in billing.tenants.items():
            wanted[tenant_id] = listed.stripe_customer_id
        for tenant_id, tenant_row in rows.items():
            if tenant_id not in wanted and billing.tenant(tenant_id, tenant_row.plan) is not None:
                wanted[tenant_id] = None
        by_tenant: dict[str, str] | None = None
        for tenant_id in sorted(wanted):
            row = rows.get(tenant_id)
            known = wanted[tenant_id] or (row.stripe_customer_id if row else None)
            if known:
                try:
                    call(partial(client.v1.customers.retrieve, known))
                except StripeRejected as exc:
                    report.problems.append(f"tenant {tenant_id}: customer {known}: {exc}")
                    continue
                report.customers[tenant_id] = (known, "verified")
                customer_id = known
            else:
                if by_tenant is None:
                    by_tenant = _customers_by_tenant(client)
                customer_id = by_tenant.get(tenant_id, "")
                action = "adopted"
                if not customer_id:
                    params = {
                        "name": row.name if row else tenant_id,
                        "metadata": {"llmops_tenant_id": tenant_id},
                    }
                    options = {"idempotency_key": f"llmops-customer-{tenant_id}"}
                    created = call(partial(client.v1.customers.create, params, options))
                    customer_id, action = created["id"], "created"
                report.customers[tenant_id] = (customer_id, action)
            if row is None:
                entry = billing.tenants.get(tenant_id)
                row = Tenant(id=tenant_id, name=tenant_id, plan=entry.plan if entry else None)
                session.add(row)
            row.stripe_customer_id = customer_id


def _customers_by_tenant(client: Any) -> dict[str, str]:
    page = call(lambda: client.v1.customers.list({"limit": 100}))
    out: dict[str, str] = {}
    for customer in page.auto_paging_iter():
        tenant = (customer.get("metadata") or {}).get("llmops_tenant_id")
        if tenant and tenant not in out:
            out[tenant] = customer["id"]
    return out
