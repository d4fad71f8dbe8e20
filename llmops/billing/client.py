"""The Stripe client (the official ``stripe`` package) and retries with backoff.

``LLMOPS_STRIPE_API_BASE`` points the client at a stand-in; the SDK's own retries are
off (``max_network_retries=0``) so that retrying lives in one place: :func:`call` retries
429, 5xx and connection errors with exponential backoff and jitter, and a shared
:class:`Pacer` spaces requests out after a 429 so a storm slows the whole sync down
instead of hammering Stripe, then speeds up again as calls succeed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmops.errors import ConfigError, LLMOpsError, RetryableError
from llmops.settings import Settings

__all__ = [
    "Pacer",
    "RetryPolicy",
    "StripeRejected",
    "StripeUnavailable",
    "call",
    "make_client",
    "stripe_message",
]

_T = TypeVar("_T")


class StripeRejected(LLMOpsError):
    """Stripe refused a request (4xx other than 429): retrying will not help."""

    def __init__(self, message: str, *, status: int | None, code: str | None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class StripeUnavailable(RetryableError):
    """Stripe kept answering 429/5xx or could not be reached after every retry."""

    error_class = "stripe_unavailable"


def make_client(settings: Settings, *, api_key: str | None = None) -> Any:
    """A ``stripe.StripeClient`` for the configured key and API base."""
    import stripe

    key = api_key or (
        settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else None
    )
    if not key:
        raise ConfigError(
            "LLMOPS_STRIPE_API_KEY", "value", "not set: a Stripe secret key is needed"
        )
    return stripe.StripeClient(
        key,
        base_addresses={"api": settings.stripe_api_base.rstrip("/")},
        max_network_retries=0,
    )


@dataclass
class RetryPolicy:
    """Backoff for retryable Stripe answers."""

    max_attempts: int = 8
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0


@dataclass
class Pacer:
    """A delay between requests that doubles on each 429 and decays on success."""

    min_gap_s: float = 0.0
    max_gap_s: float = 2.0
    gap_s: float = 0.0
    throttled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, sleep: Callable[[float], None]) -> None:
        if self.gap_s > 0:
            sleep(self.gap_s)

    def on_throttle(self) -> None:
        with self._lock:
            self.throttled += 1
            self.gap_s = min(self.max_gap_s, max(self.gap_s * 2, 0.02))

    def on_success(self) -> None:
        with self._lock:
            self.gap_s = max(self.min_gap_s, self.gap_s * 0.8 if self.gap_s > 0.001 else 0.0)


def stripe_message(exc: BaseException) -> str:
    """Stripe's own message for an SDK error."""
    return str(getattr(exc, "user_message", None) or exc)


def _retryable(exc: BaseException) -> bool:
    import stripe

    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    status = getattr(exc, "http_status", None)
    return isinstance(exc, stripe.StripeError) and (status == 429 or (status or 0) >= 500)


def call(
    fn: Callable[[], _T],
    *,
    policy: RetryPolicy | None = None,
    pacer: Pacer | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """``fn()``, retried on 429/5xx/connection errors; a 4xx raises :class:`StripeRejected`."""
    import stripe

    policy = policy or RetryPolicy()
    for attempt in range(1, policy.max_attempts + 1):
        if pacer is not None:
            pacer.wait(sleep)
        try:
            result = fn()
        except stripe.StripeError as exc:
            if not _retryable(exc):
                raise StripeRejected(
                    stripe_message(exc), status=exc.http_status, code=exc.code
                ) from exc
            if pacer is not None and getattr(exc, "http_status", None) == 429:
                pacer.on_throttle()
            if attempt == policy.max_attempts:
                raise StripeUnavailable(
                    f"Stripe still failing after {attempt} attempts: {stripe_message(exc)}"
                ) from exc
            delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
            sleep(delay * (0.5 + random.random() / 2))
            continue
        if pacer is not None:
            pacer.on_success()
        return result
    raise AssertionError("unreachable")
