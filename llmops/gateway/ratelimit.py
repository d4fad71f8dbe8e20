"""Rate limits per tenant and per (tenant, feature): requests and tokens per minute.

Usage, in the gateway core::

    limiter = make_rate_limiter(settings.redis_url, engine)   # once
    rules = config.rules_for(tenant_id, feature_id)           # [] costs nothing below
    permit = await limiter.acquire(rules, tokens=input_tokens + max_tokens)  # RateLimited
    try:
        response = await call_the_model(...)
    finally:
        await limiter.settle(permit, actual_tokens=usage.total or 0)

**Backends.** :class:`RedisRateLimiter` when ``LLMOPS_REDIS_URL`` is set (one Lua script
per call), :class:`DbRateLimiter` otherwise (a row per limit in the ops DB, locked per
call: ``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE`` on Postgres), and
:class:`InProcessRateLimiter` for one process (tests, embedded use). All three share the
arithmetic in :mod:`ratelimit_core`, so they admit exactly the same requests.

**Algorithm: GCRA**, kept as its equivalent leaky bucket. Each limit (``tenant:acme
rpm``) is a bucket of capacity N (the limit) that drains N units per 60 s; its state is
two numbers, the level and when it was last updated. A request fits when, for *every*
bucket it touches, ``level drained to now + cost <= N``; then all buckets take their
cost, otherwise none does and :class:`~llmops.errors.RateLimited` names the bucket that
frees up last, with ``retry_after_s`` = ``(level + cost - N) * 60 / N`` rounded up to
whole seconds (at least 1, as the ``Retry-After`` header needs). Why GCRA rather than a
sliding window counter: one row or key per limit and no per-window rows to clean up,
an exact retry time, no boundary at which a whole window's quota returns at once, and
costs of any size (tokens) fit the same formula. The level is stored in units rather
than as a theoretical arrival time so integer costs add exactly: N requests at one
instant are admitted and the N+1st is not, with no float slack.

**Error bound.** From an idle bucket N units go through at once, then N per 60 s as it
drains. So over any interval of t seconds at most ``N + N * t / 60`` units are admitted:
exactly N within one instant, under 2N in any 60 s window (a full burst followed by a
minute of steady refill), and N per minute on average over a long run. A sliding window
counter has the same 2N worst case on an adversarial pattern, but only approximately N
per window on average. Across hosts, a clock ``s`` seconds ahead can drain a bucket
early by ``s * N / 60`` units (Redis takes time from the caller; keep NTP on).

**Leases.** :func:`make_rate_limiter` puts :class:`LeasedRateLimiter` in front of the
shared store: a process takes 2% slices of large limits and admits from them in memory,
so a call costs no round trip; small limits still go to the store call by call. Its
module docstring states how that changes the bound below (by the slices outstanding).

**Tokens: reserve, then settle** (like budgets). The input token count is known before
the call, the output only after. ``acquire`` takes ``tokens = input + max_tokens`` (or an
estimate) from every tpm bucket, so a burst of concurrent calls cannot overshoot tpm the
way checking before and counting after would (every call passes the check before any is
counted). ``settle`` moves the buckets to the actual total: the unused part of the
reservation goes back at once, a larger actual usage is booked as debt that delays later
requests. Settle a failed call with the tokens the provider billed (usually 0); settle is
idempotent per permit. A permit never settled (a crashed worker) needs no cleanup: its
reservation drains within a minute like any other usage. An estimate above a tpm limit
is clamped to the limit, so such a request waits for an empty bucket instead of failing
forever; ``tokens`` does not affect rpm buckets.
"""

from __future__ import annotations

from sqlalchemy import Engine

from llmops.gateway.ratelimit_core import (
    InProcessRateLimiter,
    Permit,
    RateLimit,
    RateLimitConfig,
    RateLimiter,
    TenantLimits,
)
from llmops.gateway.ratelimit_db import DbRateLimiter
from llmops.gateway.ratelimit_lease import LeasedRateLimiter
from llmops.gateway.ratelimit_redis import RedisRateLimiter

__all__ = [
    "DbRateLimiter",
    "InProcessRateLimiter",
    "LeasedRateLimiter",
    "Permit",
    "RateLimit",
    "RateLimitConfig",
    "RateLimiter",
    "RedisRateLimiter",
    "TenantLimits",
    "make_rate_limiter",
]


def make_rate_limiter(redis_url: str | None, engine: Engine) -> LeasedRateLimiter:
    """Redis when ``redis_url`` (``LLMOPS_REDIS_URL``) is set, the ops DB otherwise, with
    per-process slices of large limits (:mod:`ratelimit_lease`) in front."""
    shared: DbRateLimiter | RedisRateLimiter = (
        RedisRateLimiter(redis_url) if redis_url else DbRateLimiter(engine)
    )
    return LeasedRateLimiter(shared)
