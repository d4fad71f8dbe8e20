"""Plans and meters from ``config/billing.yaml``: what is billed, in which unit, at what price.

A *meter* is one Stripe Billing Meter: an event name and the measure it counts. Meter
values must be integers, so each measure has a fixed integer unit:

============================  ===========================================================
measure                       unit sent to Stripe (per tenant and hour)
============================  ===========================================================
``input_tokens``              input (prompt) tokens
``output_tokens``             output (completion) tokens
``total_tokens``              input + output tokens
``calls``                     calls through the gateway, failed ones included
``successful_calls``          calls that returned an answer
``successful_actions``        actions whose outcome is ``success`` (hour of the outcome)
``provider_cost``             micro-dollars of provider cost times (1 + the plan's markup),
                              rounded half-up per tenant and hour
============================  ===========================================================

A *plan* prices some meters (``unit_price_usd`` per unit, or ``markup`` for
``provider_cost``). Tenants map to a plan and a Stripe customer here or on their
``tenants`` row (``llmops billing setup`` stores the customer it creates there).

Problems that affect only part of the file (a plan naming an unknown meter, a tenant on an
unknown plan) do not stop billing the rest: they are kept in ``BillingConfig.problems``
and reported by every command and flow that loads the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops.configfile import load_yaml_model

__all__ = [
    "MEASURES",
    "BillingConfig",
    "MeterSpec",
    "Plan",
    "PlanMeter",
    "TenantBilling",
    "load_billing_config",
    "micro_usd",
]

Measure = Literal[
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "calls",
    "successful_calls",
    "successful_actions",
    "provider_cost",
]
MEASURES: tuple[str, ...] = Measure.__args__  # type: ignore[attr-defined]
_MICRO = Decimal(1_000_000)


def micro_usd(amount: Decimal) -> int:
    """Dollars as whole micro-dollars, rounded half-up."""
    return int((amount * _MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeterSpec(_Strict):
    """One Stripe meter."""

    event_name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    display_name: str = Field(min_length=1, max_length=250)
    measure: Measure


class PlanMeter(_Strict):
    """A meter's price in a plan: per unit, or as a markup on provider cost."""

    unit_price_usd: Decimal | None = Field(default=None, ge=0)
    markup: Decimal | None = Field(default=None, ge=-1)


class _PlanFile(_Strict):
    description: str = ""
    meters: dict[str, PlanMeter]


class _TenantFile(_Strict):
    plan: str
    stripe_customer_id: str | None = None
    email: str | None = None


class _BillingFile(_Strict):
    meters: dict[str, MeterSpec] = Field(min_length=1)
    plans: dict[str, _PlanFile] = Field(min_length=1)
    tenants: dict[str, _TenantFile] = Field(default_factory=dict)
    default_plan: str | None = None

    @model_validator(mode="after")
    def _unique_event_names(self) -> _BillingFile:
        seen: dict[str, str] = {}
        for key, meter in self.meters.items():
            if meter.event_name in seen:
                raise ValueError(
                    f"meters {seen[meter.event_name]} and {key} share event_name "
                    f"{meter.event_name!r}"
                )
            seen[meter.event_name] = key
        return self


@dataclass(frozen=True)
class Plan:
    """A plan: the meters it bills and their prices (only meters that exist)."""

    name: str
    meters: dict[str, PlanMeter]

    def price(self, meter: MeterSpec, meter_key: str, quantity: int) -> Decimal:
        """What ``quantity`` units of ``meter_key`` cost under this plan, in dollars."""
        spec = self.meters[meter_key]
        if meter.measure == "provider_cost":
            return Decimal(quantity) / _MICRO
        return Decimal(quantity) * (spec.unit_price_usd or Decimal(0))


@dataclass(frozen=True)
class TenantBilling:
    """How one tenant is billed."""

    tenant_id: str
    plan: str
    stripe_customer_id: str | None
    email: str | None = None


@dataclass
class BillingConfig:
    """The validated billing file, plus the problems found in parts of it."""

    file: str
    meters: dict[str, MeterSpec]
    plans: dict[str, Plan]
    tenants: dict[str, TenantBilling]
    default_plan: str | None = None
    problems: list[str] = field(default_factory=list)

    def tenant(
        self, tenant_id: str, db_plan: str | None = None, db_customer: str | None = None
    ) -> TenantBilling | None:
        """The tenant's billing: the file first, then its ``tenants`` row, then the default."""
        listed = self.tenants.get(tenant_id)
        if listed is not None:
            if listed.stripe_customer_id is None and db_customer:
                return TenantBilling(tenant_id, listed.plan, db_customer, listed.email)
            return listed
        plan = db_plan or self.default_plan
        if plan is None or plan not in self.plans:
            return None
        return TenantBilling(tenant_id, plan, db_customer)


def load_billing_config(path: Path) -> BillingConfig:
    """Load and check ``path``; structural errors raise ConfigError (file, field, reason)."""
    raw = load_yaml_model(path, _BillingFile)
    file = str(path)
    problems: list[str] = []
    plans: dict[str, Plan] = {}
    for name, plan in raw.plans.items():
        meters: dict[str, PlanMeter] = {}
        for key, price in plan.meters.items():
            where = f"{file}: plans.{name}.meters.{key}"
            meter = raw.meters.get(key)
            if meter is None:
                problems.append(
                    f"{where}: unknown meter {key!r} (meters: {', '.join(sorted(raw.meters))});"
                    " not billed"
                )
                continue
            if meter.measure == "provider_cost":
                if price.markup is None or price.unit_price_usd is not None:
                    problems.append(f"{where}: a provider_cost meter takes `markup` only")
                    continue
            elif price.unit_price_usd is None or price.markup is not None:
                problems.append(f"{where}: a {meter.measure} meter takes `unit_price_usd` only")
                continue
            meters[key] = price
        plans[name] = Plan(name, meters)
    tenants: dict[str, TenantBilling] = {}
    for tenant_id, entry in raw.tenants.items():
        if entry.plan not in plans:
            problems.append(
                f"{file}: tenants.{tenant_id}.plan: unknown plan {entry.plan!r}; not billed"
            )
            continue
        tenants[tenant_id] = TenantBilling(
            tenant_id, entry.plan, entry.stripe_customer_id, entry.email
        )
    default_plan = raw.default_plan
    if default_plan is not None and default_plan not in plans:
        problems.append(f"{file}: default_plan: unknown plan {default_plan!r}; ignored")
        default_plan = None
    return BillingConfig(file, dict(raw.meters), plans, tenants, default_plan, problems)
