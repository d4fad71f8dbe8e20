"""Which job failures are worth another attempt, and when.

Retryable: timeouts, 429 (the provider's or llmops' own rate limits), 5xx, connection
errors (every :class:`~llmops.errors.RetryableError`), a lost database, and a budget
refusal that only in-flight holds cause (the cap's settled spend is under its limit, so
the holds settle or are released and the next window of the same cap has room).
Permanent: validation (bad payload, deleted prompt, missing variables), a hard cap
whose spend is used up, content policy, PII block, an unpriced model, anything unknown.

Backoff is exponential with "equal jitter": attempt ``n`` waits between half and all of
``base * 2**(n-1)`` seconds (capped at ``max``), and never less than a 429's Retry-After.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from llmops.errors import (
    BudgetExceeded,
    DatabaseUnavailable,
    GatewayError,
    PricingError,
    RateLimited,
    ValidationError,
    is_retryable,
)
from llmops.gateway.budget import BudgetManager

__all__ = ["Failure", "backoff_s", "classify"]


@dataclass(frozen=True)
class Failure:
    """A classified failure of one attempt."""

    error_class: str
    message: str
    retryable: bool
    retry_after_s: float = 0.0


def classify(
    exc: BaseException, *, budgets: BudgetManager | None, tenant_id: str, feature_id: str
) -> Failure:
    """How the queue treats ``exc``, raised by one attempt of a job."""
    message = (str(exc) or type(exc).__name__).split("\n", 1)[0][:1000]
    if isinstance(exc, BudgetExceeded):
        transient = budgets is not None and _held_not_spent(
            budgets, tenant_id, feature_id, exc.needed_usd
        )
        return Failure("budget_exceeded", message, transient)
    if isinstance(exc, RateLimited):
        return Failure(exc.error_class, message, True, exc.retry_after_s)
    if isinstance(exc, GatewayError):
        return Failure(exc.error_class, message, is_retryable(exc))
    if isinstance(exc, ValidationError):
        return Failure("validation", message, False)
    if isinstance(exc, PricingError):
        return Failure("pricing", message, False)
    if isinstance(exc, DatabaseUnavailable):
        return Failure("database_unavailable", message, True)
    if isinstance(exc, TimeoutError):
        return Failure("timeout", message or "job timed out", True)
    return Failure("internal", f"{type(exc).__name__}: {message}", False)


def _held_not_spent(
    budgets: BudgetManager, tenant_id: str, feature_id: str, needed: Decimal | None
) -> bool:
    """True when the call would fit every hard cap on it once the holds of other calls
    (and leases of other processes) settle: the refusal came from holds, not spend. With
    the call's worst case unknown, settled spend under the limit is the test."""
    caps = [
        cap
        for cap in budgets.list_caps()
        if cap.mode == "hard"
        and cap.tenant_id in (None, tenant_id)
        and cap.feature_id in (None, feature_id)
        and (cap.tenant_id is not None or cap.feature_id is not None)
    ]
    if needed is None:
        return bool(caps) and all(cap.spent_usd < cap.limit_usd for cap in caps)
    return bool(caps) and all(cap.spent_usd + needed <= cap.limit_usd for cap in caps)


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based)."""
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    jittered: float = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    return max(jittered, float(retry_after_s))
