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
    forced: bool = Field(default=False)
    created_at: datetime = _ts()


class Job(SQLModel, table=True):
    """A unit of slow LLM work on the durable queue (:mod:`llmops.queue`).

    ``status``: queued -> running -> completed | queued (retry) | dead (dead-letter).
    A claim sets ``lease_owner`` and ``lease_expires_at`` and increments ``attempts``;
    ``(id, attempts, lease_owner)`` fences every later write of that claim.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idem"),
        Index("ix_jobs_claim", "status", "priority", "created_at"),
        Index("ix_jobs_ready", "status", "tenant_id", "priority", "created_at"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
        Index("ix_jobs_callback", "callback_status", "callback_next_at"),
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
    action_id: str | None = Field(default=None, max_length=100)
    request_id: str | None = Field(default=None, max_length=40)
    started_at: datetime | None = _ts(nullable=True)
    callback_status: str | None = Field(default=None, max_length=16)
    callback_attempts: int = Field(default=0)
    callback_next_at: datetime | None = _ts(nullable=True)
    callback_http_status: int | None = None
    callback_error: str | None = Field(default=None, sa_type=Text)
    callback_delivered_at: datetime | None = _ts(nullable=True)


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
    """Usage aggregated by tenant, feature, model, prompt version and hour or day.

    Written by :mod:`llmops.metering.rollup`: a window is recomputed whole from the request
    log whenever a row lands in it, so a row here always equals the log's totals.
    ``model`` is the routed model, or the model group for calls that never reached one.
    """

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
    input_tokens: int = Field(default=0, sa_type=BigInteger)
    output_tokens: int = Field(default=0, sa_type=BigInteger)
    cached_tokens: int = Field(default=0, sa_type=BigInteger)
    reasoning_tokens: int = Field(default=0, sa_type=BigInteger)
    cost_usd: Decimal = _money()
    cache_hits: int = 0
    errors: int = 0
    latency_p50_ms: int = 0
    latency_p95_ms: int = 0
    updated_at: datetime = _ts()


class StripeSyncLedger(SQLModel, table=True):
    """Every meter event sent (or about to be) to Stripe, keyed by a deterministic identifier.

    One row per (tenant, meter, hour, seq): seq 0 is the first send of a window, later seqs
    are deltas for late usage. ``status``: ``pending`` (written before the send; resent
    verbatim until Stripe answers), ``sent`` (Stripe accepted it), ``rejected`` (Stripe
    refused it: not counted, retried as a new seq next run), ``adjust`` (too old for Stripe
    or a decrease: flagged for an invoice adjustment, never sent).
    """

    __tablename__ = "stripe_sync_ledger"
    __table_args__ = (
        UniqueConstraint("tenant_id", "meter", "window_start", "seq", name="uq_stripe_sync_seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    identifier: str = Field(max_length=100, unique=True)
    tenant_id: str = Field(max_length=64, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=64)
    meter: str = Field(max_length=100)
    event_name: str = Field(default="", max_length=100)
    window_start: datetime = _ts()
    window_end: datetime = _ts()
    seq: int = 0
    value: int = Field(default=0, sa_type=BigInteger)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    response: dict[str, Any] | None = _json()
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)


class EvalRun(SQLModel, table=True):
    """One run of an eval suite against a prompt version (or an unpushed file) and model."""

    __tablename__ = "eval_runs"

    id: str = Field(primary_key=True, max_length=40)
    suite: str = Field(max_length=100, index=True)
    prompt_name: str = Field(max_length=100)
    prompt_version: int | None = None  # None: a prompt file not pushed to the store
    prompt_hash: str = Field(default="", max_length=64, index=True)
    model_group: str = Field(max_length=100)
    dataset_name: str = Field(max_length=100)
    dataset_hash: str = Field(max_length=64)
    trials: int = Field(default=1)
    status: str = Field(default="running", max_length=16)
    baseline_run_id: str | None = Field(default=None, max_length=40)
    metrics: dict[str, Any] | None = _json()
    passed: bool | None = None
    items_total: int = Field(default=0)
    items_unscored: int = Field(default=0)
    provider_calls: int = Field(default=0)
    cost_usd: Decimal = _money()
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class EvalResult(SQLModel, table=True):
    """One scored output: a dataset item and trial within an eval run.

    ``status`` is ``scored`` or ``unscored`` (the item could not be run or scored: bad
    dataset line, missing variable, provider or judge failure after retries); an unscored
    item never counts as a pass, and ``error`` says why.
    """

    __tablename__ = "eval_results"
    __table_args__ = (UniqueConstraint("run_id", "item_id", "trial", name="uq_eval_results_item"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="eval_runs.id", max_length=40, index=True)
    item_id: str = Field(max_length=200)
    trial: int = 0
    status: str = Field(default="scored", max_length=16)
    error: str | None = Field(default=None, sa_type=Text)
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


class Alert(SQLModel, table=True):
    """An operational alert: one row per condition, however often it is raised.

    ``kind`` + ``key`` identify the condition (``soft_cap`` + ``tenant:acme:month:80``);
    raising it again bumps ``occurrences`` and ``last_seen_at`` but is not delivered again.
    """

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_alerts_kind_key"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=40)
    key: str = Field(max_length=300)
    severity: str = Field(default="warning", max_length=16)
    summary: str = Field(max_length=500)
    details: dict[str, Any] | None = _json()
    occurrences: int = Field(default=1)
    first_seen_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    delivered_at: datetime | None = _ts(nullable=True)
    delivery_attempts: int = Field(default=0)
    delivery_error: str | None = Field(default=None, sa_type=Text)


class EvalOutputCache(SQLModel, table=True):
    """A model output for (prompt version hash, dataset item hash, model group, params,
    trial): a rerun of unchanged inputs, or a resumed run, makes no provider call."""

    __tablename__ = "eval_output_cache"

    key: str = Field(primary_key=True, max_length=64)
    prompt_hash: str = Field(max_length=64)
    item_hash: str = Field(max_length=64)
    model_group: str = Field(max_length=100)
    trial: int = 0
    output: str = Field(sa_type=Text)
    request_id: str | None = Field(default=None, max_length=40)
    cost_usd: Decimal = _money()
    latency_ms: int = 0
    created_at: datetime = _ts()


class EvalGate(SQLModel, table=True):
    """One gate decision: a candidate prompt against a baseline on a suite.

    Promotion of a version requires a passing gate whose candidate hash is that version's.
    """

    __tablename__ = "eval_gates"

    id: str = Field(primary_key=True, max_length=40)
    suite: str = Field(max_length=100, index=True)
    prompt_name: str = Field(max_length=100, index=True)
    candidate_hash: str = Field(max_length=64, index=True)
    candidate_version: int | None = None
    baseline_version: int | None = None
    candidate_run_id: str = Field(max_length=40)
    baseline_run_id: str | None = Field(default=None, max_length=40)
    passed: bool = False
    report: dict[str, Any] | None = _json()
    actor: str = Field(default="", max_length=200)
    created_at: datetime = _ts()


class MeterUsage(SQLModel, table=True):
    """Billable quantity of one plan meter for a tenant and hour: what Stripe should hold.

    ``quantity`` is an integer in the meter's unit (tokens, calls, actions or micro-dollars,
    see ``config/billing.yaml``); ``amount_usd`` is its price under the tenant's plan.
    """

    __tablename__ = "meter_usage"
    __table_args__ = (
        UniqueConstraint("tenant_id", "meter", "window_start", name="uq_meter_usage_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(max_length=64)
    meter: str = Field(max_length=100)
    plan: str = Field(max_length=64)
    window_start: datetime = _ts(index=True)
    quantity: int = Field(default=0, sa_type=BigInteger)
    amount_usd: Decimal = _money()
    updated_at: datetime = _ts()


class ActionOutcome(SQLModel, table=True):
    """The outcome of one user action (the calls sharing an ``action_id``): final once set."""

    __tablename__ = "action_outcomes"
    __table_args__ = (UniqueConstraint("tenant_id", "action_id", name="uq_action_outcomes_action"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BIGSERIAL_ID)
    tenant_id: str = Field(max_length=64, index=True)
    action_id: str = Field(max_length=100)
    outcome: str = Field(max_length=16)
    source: str = Field(max_length=32)
    job_id: str | None = Field(default=None, max_length=40)
    detail: str | None = Field(default=None, max_length=1000)
    recorded_at: datetime = _ts(index=True)


class MeteringWatermark(SQLModel, table=True):
    """How far an incremental metering step has read a source (a row id)."""

    __tablename__ = "metering_watermarks"

    name: str = Field(primary_key=True, max_length=64)
    position: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = _ts()


class MeteringReject(SQLModel, table=True):
    """A request-log row left out of the rollups, with the reason (never dropped silently)."""

    __tablename__ = "metering_rejects"

    request_id: str = Field(primary_key=True, max_length=40)
    tenant_id: str | None = Field(default=None, max_length=64)
    started_at: datetime = _ts()
    reason: str = Field(max_length=500)
    created_at: datetime = _ts()


class ReconciliationDrift(SQLModel, table=True):
    """One (customer, meter, hour) whose Stripe total differs from the ledger or rollups."""

    __tablename__ = "reconciliation_drifts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=40, index=True)
    tenant_id: str = Field(max_length=64)
    stripe_customer_id: str | None = Field(default=None, max_length=64)
    meter: str = Field(max_length=100)
    window_start: datetime = _ts()
    metered: int = Field(default=0, sa_type=BigInteger)
    ledger_sent: int = Field(default=0, sa_type=BigInteger)
    stripe: int = Field(default=0, sa_type=BigInteger)
    flagged: int = Field(default=0, sa_type=BigInteger)
    drift: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = _ts()


class TenantCallbackSecret(SQLModel, table=True):
    """The per-tenant secret that signs job callbacks (HMAC-SHA256 over the body)."""

    __tablename__ = "tenant_callback_secrets"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.id", max_length=64)
    secret: str = Field(max_length=100)
    created_at: datetime = _ts()


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
