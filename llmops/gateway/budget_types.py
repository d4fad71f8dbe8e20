"""Values of the spend-cap API: scopes, windows, reservations, alerts, money parsing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Literal, cast, get_args

from llmops.db.types import MONEY_SCALE
from llmops.errors import ValidationError
from llmops.gateway.pricebook import Price

Period = Literal["day", "month", "total"]
Mode = Literal["hard", "soft"]
PERIODS: tuple[str, ...] = get_args(Period)
MODES: tuple[str, ...] = get_args(Mode)

#: Thresholds (percent of the limit, counting settled spend) that raise an alert once
#: per cap and window.
ALERT_THRESHOLDS = (80, 100)

#: The single window of a "total" cap.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_QUANT = Decimal(1).scaleb(-MONEY_SCALE)
_MILLION = Decimal(1_000_000)
_MAX_ID = 64


@dataclass(frozen=True)
class CapScope:
    """Who a cap applies to: a tenant, a feature, or one feature of one tenant.

    Its key is ``tenant:acme``, ``feature:summary`` or ``tenant:acme/feature:summary``.
    """

    tenant_id: str | None = None
    feature_id: str | None = None

    def __post_init__(self) -> None:
        if self.tenant_id is None and self.feature_id is None:
            raise ValidationError("a spend cap needs a tenant, a feature or both")
        for what, value in (("tenant", self.tenant_id), ("feature", self.feature_id)):
            if value is not None:
                check_id(what, value)

    @property
    def key(self) -> str:
        parts = []
        if self.tenant_id is not None:
            parts.append(f"tenant:{self.tenant_id}")
        if self.feature_id is not None:
            parts.append(f"feature:{self.feature_id}")
        return "/".join(parts)

    @classmethod
    def parse(cls, key: str) -> CapScope:
        """The scope of a key such as ``tenant:acme/feature:summary``."""
        found: dict[str, str] = {}
        for part in key.split("/"):
            kind, sep, value = part.partition(":")
            if not sep or kind not in ("tenant", "feature") or kind in found:
                raise ValidationError(f"not a cap scope key: {key!r}")
            found[kind] = value
        if list(found) == ["feature", "tenant"]:
            raise ValidationError(f"not a cap scope key: {key!r} (tenant comes first)")
        return cls(tenant_id=found.get("tenant"), feature_id=found.get("feature"))


def scope_key(tenant_id: str | None, feature_id: str | None) -> str:
    """The scope key of a cap on ``tenant_id``, ``feature_id`` or the pair."""
    return CapScope(tenant_id, feature_id).key


def check_id(what: str, value: str) -> None:
    # "/" separates the parts of a scope key: an id holding one would make two scopes
    # share a key (tenant "a/feature:b" versus tenant "a" with feature "b").
    if not value or len(value) > _MAX_ID or "/" in value:
        raise ValidationError(f"{what} id must be 1-{_MAX_ID} characters without '/'")


@dataclass(frozen=True)
class BudgetAlert:
    """A cap's settled spend reached ``threshold_pct`` of its limit in a window."""

    cap_id: int
    scope_key: str
    period: str
    window_start: datetime
    threshold_pct: int
    spent_usd: Decimal
    limit_usd: Decimal
    mode: str


@dataclass(frozen=True)
class Reservation:
    """A worst-case hold on every cap that applies to one request.

    ``cap_ids`` is empty when no cap applied: nothing was written and settling or
    releasing it costs nothing. ``alerts`` is always empty today: alerts count settled
    spend, so they come from :meth:`BudgetManager.settle` (kept so callers handle both).
    """

    id: str
    request_id: str
    amount_usd: Decimal
    cap_ids: tuple[int, ...]
    alerts: tuple[BudgetAlert, ...] = ()


@dataclass(frozen=True)
class CapStatus:
    """A cap and its current window: spent (settled), reserved (held), remaining."""

    id: int
    scope_key: str
    tenant_id: str | None
    feature_id: str | None
    period: str
    mode: str
    limit_usd: Decimal
    window_start: datetime
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        """What new reservations may still take (never below zero)."""
        return max(self.limit_usd - self.spent_usd - self.reserved_usd, Decimal(0))

    @property
    def used_pct(self) -> Decimal:
        """Settled spend as a percentage of the limit (what the alerts count)."""
        return (self.spent_usd * 100 / self.limit_usd).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class CapSpec:
    """A validated cap definition: scope, positive limit, period and mode."""

    scope: CapScope
    limit_usd: Decimal
    period: Period
    mode: Mode

    @classmethod
    def parse(
        cls,
        tenant_id: str | None,
        feature_id: str | None,
        limit_usd: object,
        period: str,
        mode: str = "hard",
    ) -> CapSpec:
        """Check every field, raising :class:`ValidationError` with a one-line reason."""
        scope = CapScope(tenant_id, feature_id)
        limit = parse_money(limit_usd, "limit_usd")
        if limit <= 0:
            raise ValidationError(f"limit_usd must be positive, got {limit_usd}")
        if period not in PERIODS:
            raise ValidationError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        return cls(scope, limit, cast(Period, period), cast(Mode, mode))


def window_start(period: str, at: datetime) -> datetime:
    """Start of the window of ``period`` holding ``at``: UTC midnight, the 1st of the
    month, or :data:`EPOCH` for ``total``."""
    moment = at.astimezone(UTC)
    if period == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "total":
        return EPOCH
    raise ValidationError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")


def worst_case_cost(price: Price, input_tokens: int, max_tokens: int) -> Decimal:
    """The most a call can cost: every input token at the input price (no cache discount)
    and ``max_tokens`` at the dearer of the output and reasoning prices."""
    if input_tokens < 0 or max_tokens < 0:
        raise ValidationError("token counts must not be negative")
    if price.free:
        return Decimal(0)
    per_output = max(price.output_per_mtok, price.reasoning_per_mtok)
    micro = input_tokens * price.input_per_mtok + max_tokens * per_output
    return (micro / _MILLION).quantize(_QUANT, rounding=ROUND_CEILING)


def parse_money(value: object, what: str, *, round_up: bool = False) -> Decimal:
    """A non-negative finite USD amount at the ledger's scale (12 places).

    Reservations round up (a hold is never below the worst case); actual costs round
    half-even, as the Money column does, so the ledger matches the request log.
    """
    if isinstance(value, float | bool):
        raise ValidationError(f"{what} must be a Decimal, int or str, never {type(value).__name__}")
    try:
        if isinstance(value, str):
            amount = Decimal(value.strip())
        elif isinstance(value, Decimal | int):
            amount = Decimal(value)
        else:
            raise TypeError(type(value).__name__)
        if not amount.is_finite():
            raise InvalidOperation
        amount = amount.quantize(_QUANT, rounding=ROUND_CEILING if round_up else ROUND_HALF_EVEN)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be a finite amount in USD, got {value!r}") from exc
    if amount < 0:
        raise ValidationError(f"{what} must not be negative, got {value}")
    return amount


def format_usd(amount: Decimal) -> str:
    """``$1.50``, ``$0.0042``: at least cents, at most micro-dollars, no float."""
    text = f"{amount.quantize(Decimal('0.000001')):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"
