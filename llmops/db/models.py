"""The ops DB schema (SQLModel). Migrations in ``llmops/db/migrations`` create it.

Money columns are :class:`Money` (exact Decimal), timestamps :class:`UTCDateTime`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from llmops.db.types import Money, UTCDateTime
from llmops.ids import utcnow

ZERO = Decimal(0)

#: 64-bit ids for tables that grow without bound; SQLite only auto-increments a column
#: declared exactly INTEGER PRIMARY KEY, so it keeps that there.
BIGSERIAL_ID = BigInteger().with_variant(Integer(), "sqlite")


#: Constraint names are explicit and stable so later SQLite batch migrations can drop or
#: alter them (SQLite has no names for unnamed constraints). "ix" matches SQLAlchemy's
#: default, so index names are unchanged. Set before any table class is defined.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _ts(*, index: bool = False, nullable: bool = False) -> Any:
    if nullable:
        # Optional timestamps default to None; without a default pydantic treats them
        # as required in model_validate() and in non-table subclasses.
        return Field(default=None, sa_type=UTCDateTime, nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)


def _money(*, nullable: bool = False) -> Any:
    return Field(default=None if nullable else ZERO, sa_type=Money, nullable=nullable)


def _json() -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=True))


class Tenant(SQLModel, table=True):
    """A customer of the product. API keys are stored only as SHA-256 hashes."""

    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    api_key_hash: str | None = Field(default=None, max_length=64, unique=True)
    api_key_prefix: str | None = Field(default=None, max_length=16)
    stripe_customer_id: str | None = Field(default=None, max_length=64, index=True)
    plan: str | None = Field(default=None, max_length=64)
    active: bool = Field(default=True)
    created_at: datetime = _ts()


class Feature(SQLModel, table=True):
    """A product feature that makes LLM calls (the unit of cost attribution)."""

    __tablename__ = "features"

    id: str = Field(primary_key=True, max_length=64)
    description: str = Field(default="", max_length=500)
    default_model_group: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts()


class PromptVersion(SQLModel, table=True):
    """An immutable version of a prompt file."""

    __tablename__ = "prompt_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),
        UniqueConstraint("name", "content_hash", name="uq_prompt_versions_name_hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    version: int
    content_hash: str = Field(max_length=64)
    body: dict[str, Any] | None = _json()
    model_group: str | None = Field(default=None, max_length=100)
    author: str = Field(default="", max_length=200)
    message: str = Field(default="", max_length=1000)
    created_at: datetime = _ts()


class PromptLabel(SQLModel, table=True):
    """A movable label (``production``, ``staging``, …) pointing at one prompt version."""

    __tablename__ = "prompt_labels"

    name: str = Field(primary_key=True, max_length=100)
    label: str = Field(primary_key=True, max_length=64)
    version: int
    updated_by: str = Field(default="", max_length=200)
    updated_at: datetime = _ts()


class PromptLabelEvent(SQLModel, table=True):
    """Audit trail of label moves: who, when, from which version to which, and why."""

    __tablename__ = "prompt_label_events"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    label: str = Field(max_length=64)
    from_version: int | None = None
    to_version: int
    actor: str = Field(default="", max_length=200)
    eval_run_id: str | None = Field(default=None, max_length=40)
    reason: str = Field(default="", max_length=1000)
    created_at: datetime = _ts()


class Job(SQLModel, table=True):
    """A unit of slow LLM work on the durable queue."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idem"),
        Index("ix_jobs_claim", "status", "priority", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=64, index=True)
    feature_id: str = Field(max_length=64)
    status: str = Field(default="queued", max_length=16)
    priority: int = Field(default=0)
    payload: dict[str, Any] | None = _json()
    idempotency_key: str | None = Field(default=None, max_length=200)
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=3)
    not_before: datetime | None = _ts(nullable=True)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = _ts(nullable=True)
    callback_url: str | None = Field(default=None, max_length=2000)
    result: dict[str, Any] | None = _json()
    error: str | None = Field(default=None, sa_type=Text)
    history: list[dict[str, Any]] | None = _json()
    cost_usd: Decimal = _money()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    completed_at: datetime | None = _ts(nullable=True)


class RequestLog(SQLModel, table=True):
    """One row for every call through the gateway core, successful or not.

    ``id`` is a monotonically assigned sequence used by incremental loaders;
    ``request_id`` is the public identifier.
    """

    __tablename__ = "request_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=BIGSERIAL_ID)
    request_id: str = Field(max_length=40, unique=True)
    started_at: datetime = _ts(index=True)
    ended_at: datetime = _ts()
    logged_at: datetime = _ts()
    tenant_id: str = Field(max_length=64, index=True)
    feature_id: str = Field(max_length=64, index=True)
    action_id: str | None = Field(default=None, max_length=100, index=True)
    job_id: str | None = Field(default=None, max_length=40, index=True)
    prompt_name: str | None = Field(default=None, max_length=100)
    prompt_version: int | None = None
    model_group: str = Field(max_length=100)
    model: str | None = Field(default=None, max_length=200)
    deployment_id: str | None = Field(default=None, max_length=100)
    provider: str | None = Field(default=None, max_length=50)
    attempts: int = Field(default=1)
    fallbacks_used: int = Field(default=0)
    deployments_tried: list[str] | None = _json()
    cache_hit: bool = Field(default=False)
    degraded: str | None = Field(default=None, max_length=16)
    stream: bool = Field(default=False)
    status: str = Field(max_length=16)
    error_class: str | None = Field(default=None, max_length=50)
    error_message: str | None = Field(default=None, sa_type=Text)
    http_status: int | None = None
    input_tokens: int = Field(default=0)
    output_tokens: int = Field(default=0)
    cached_tokens: int = Field(default=0)
    reasoning_tokens: int = Field(default=0)
    cost_usd: Decimal = _money()
    price_version: str | None = Field(default=None, max_length=100)
    latency_ms: int = Field(default=0)
    ttft_ms: int | None = None
    request_text: str | None = Field(default=None, sa_type=Text)
    response_text: str | None = Field(default=None, sa_type=Text)
    redactions: int = Field(default=0)
    trace_id: str | None = Field(default=None, max_length=32)


class SpendCap(SQLModel, table=True):
    """A spend cap on a tenant, a (tenant, feature) pair or a feature, over a UTC period."""

    __tablename__ = "spend_caps"
    __table_args__ = (UniqueConstraint("scope_key", "period", name="uq_spend_caps_scope_period"),)

    id: int | None = Field(default=None, primary_key=True)
    scope_key: str = Field(max_length=200)
    tenant_id: str | None = Field(default=None, max_length=64)
    feature_id: str | None = Field(default=None, max_length=64)
    period: str = Field(max_length=8)
    limit_usd: Decimal = _money()
    mode: str = Field(default="hard", max_length=8)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class BudgetLedger(SQLModel, table=True):
    """Running spend and open reservations per cap and period window (one row each)."""

    __tablename__ = "budget_ledger"
    __table_args__ = (
        UniqueConstraint("cap_id", "window_start", name="uq_budget_ledger_cap_window"),
    )

    id: int | None = Field(default=None, primary_key=True)
    cap_id: int = Field(foreign_key="spend_caps.id", index=True)
    window_start: datetime = _ts()
    spent_usd: Decimal = _money()
    reserved_usd: Decimal = _money()
    alerted_pct: int = Field(default=0)
    updated_at: datetime = _ts()


class BudgetReservation(SQLModel, table=True):
    """A worst-case hold on budget taken before a call, settled or released after."""

    __tablename__ = "budget_reservations"

    id: str = Field(primary_key=True, max_length=40)
    request_id: str = Field(max_length=40, index=True)
    cap_ids: list[int] | None = _json()
    amount_usd: Decimal = _money()
    settled_usd: Decimal | None = _money(nullable=True)
    status: str = Field(default="held", max_length=16)
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)


class UsageRollup(SQLModel, table=True):
    """Usage aggregated by tenant, feature, model, prompt version and hour or day."""

    __tablename__ = "usage_rollups"
    __table_args__ = (
        UniqueConstraint(
            "granularity",
            "window_start",
            "tenant_id",
            "feature_id",
            "model",
            "prompt_name",
            "prompt_version",
            name="uq_usage_rollups_key",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    granularity: str = Field(max_length=8)
    window_start: datetime = _ts(index=True)
    tenant_id: str = Field(max_length=64)
    feature_id: str = Field(max_length=64)
    model: str = Field(max_length=200)
    prompt_name: str = Field(default="", max_length=100)
    prompt_version: int = Field(default=0)
    calls: int = 0
    successful_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = _money()
    cache_hits: int = 0
    errors: int = 0
    latency_p50_ms: int = 0
    latency_p95_ms: int = 0
    billable_units: Decimal = _money()
    updated_at: datetime = _ts()


class StripeSyncLedger(SQLModel, table=True):
    """Every meter event sent (or to be sent) to Stripe, keyed by a deterministic identifier."""

    __tablename__ = "stripe_sync_ledger"

    id: int | None = Field(default=None, primary_key=True)
    identifier: str = Field(max_length=100, unique=True)
    tenant_id: str = Field(max_length=64, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=64)
    meter: str = Field(max_length=100)
    window_start: datetime = _ts()
    window_end: datetime = _ts()
    value: Decimal = _money()
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    response: dict[str, Any] | None = _json()
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)


class EvalRun(SQLModel, table=True):
    """One run of an eval suite against a prompt version and model."""

    __tablename__ = "eval_runs"

    id: str = Field(primary_key=True, max_length=40)
    suite: str = Field(max_length=100, index=True)
    prompt_name: str = Field(max_length=100)
    prompt_version: int
    model_group: str = Field(max_length=100)
    dataset_name: str = Field(max_length=100)
    dataset_hash: str = Field(max_length=64)
    status: str = Field(default="running", max_length=16)
    baseline_run_id: str | None = Field(default=None, max_length=40)
    metrics: dict[str, Any] | None = _json()
    passed: bool | None = None
    cost_usd: Decimal = _money()
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class EvalResult(SQLModel, table=True):
    """One scored output: a dataset item and trial within an eval run."""

    __tablename__ = "eval_results"
    __table_args__ = (UniqueConstraint("run_id", "item_id", "trial", name="uq_eval_results_item"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="eval_runs.id", max_length=40, index=True)
    item_id: str = Field(max_length=200)
    trial: int = 0
    output: str | None = Field(default=None, sa_type=Text)
    scores: dict[str, Any] | None = _json()
    score: float = 0.0
    passed: bool = False
    cached: bool = False
    request_id: str | None = Field(default=None, max_length=40)
    cost_usd: Decimal = _money()
    latency_ms: int = 0
    created_at: datetime = _ts()


class RateLimitBucket(SQLModel, table=True):
    """One rate-limit bucket (``tenant:acme rpm``): units in use as of ``updated_at``.

    GCRA state as a leaky bucket: the level drains at the limit per minute, so one row
    per configured limit is the whole state and the table never grows with time.
    """

    __tablename__ = "rate_limit_buckets"

    key: str = Field(primary_key=True, max_length=200)
    level: float = Field(default=0.0)
    updated_at: datetime = _ts()


class BudgetLease(SQLModel, table=True):
    """Cap headroom one gateway process holds to admit calls without a DB round trip.

    A lease is an atomic reservation like any other: its ``amount_usd`` is part of the
    ledger row's ``reserved_usd``, so ``spent + reserved <= limit`` still holds across
    processes. Spend settled against it moves from ``amount_usd`` to ``spent_usd``; the
    unused rest returns when the process idles or stops, or when it expires.
    """

    __tablename__ = "budget_leases"

    id: str = Field(primary_key=True, max_length=40)
    cap_id: int = Field(foreign_key="spend_caps.id", index=True)
    window_start: datetime = _ts()
    holder: str = Field(max_length=200)
    amount_usd: Decimal = _money()
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)
