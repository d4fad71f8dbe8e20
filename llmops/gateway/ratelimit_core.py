"""Rate-limit config, the GCRA arithmetic every backend shares, and the in-process limiter.

The storage backends (:mod:`ratelimit_db`, :mod:`ratelimit_redis`) only differ in where a
bucket's state lives and how they lock it; what a state means and when a request fits is
decided here (and mirrored line for line in the Redis Lua script). See
:mod:`llmops.gateway.ratelimit` for the algorithm, its error bound and token accounting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from llmops.errors import RateLimited

#: Every limit is "per minute": a bucket refills its whole capacity in this many seconds.
WINDOW_S = 60.0
#: Slack for float drain arithmetic, in units (requests or tokens): a millionth of a token.
EPSILON = 1e-6

Clock = Callable[[], float]
#: A bucket's stored state: (level in units, time of the last update in clock seconds).
State = tuple[float, float]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class RateLimit(BaseModel):
    """Requests and tokens per minute; None means unlimited in that dimension."""

    model_config = _STRICT

    rpm: int | None = Field(default=None, gt=0, description="requests per minute")
    tpm: int | None = Field(default=None, gt=0, description="tokens (input + output) per minute")


class TenantLimits(RateLimit):
    """A tenant's own limits, plus limits on some of its features."""

    features: dict[str, RateLimit] = Field(default_factory=dict)


class RateLimitConfig(BaseModel):
    """The ``rate_limits:`` section of ``config/gateway.yaml``.

    ``default`` applies to each tenant that has no entry of its own, as that tenant's own
    bucket (not one shared by all of them). A tenant entry replaces the default entirely:
    its ``rpm``/``tpm`` left unset mean unlimited at the tenant level.
    """

    model_config = _STRICT

    default: RateLimit | None = None
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)

    def rules_for(self, tenant_id: str, feature_id: str) -> list[tuple[str, RateLimit]]:
        """The limits a request of ``tenant_id`` for ``feature_id`` must fit, tenant first."""
        entry = self.tenants.get(tenant_id)
        tenant_limit: RateLimit | None = entry if entry is not None else self.default
        rules: list[tuple[str, RateLimit]] = []
        if tenant_limit is not None and (tenant_limit.rpm or tenant_limit.tpm):
            # A TenantLimits carries its features too; the rule needs only the numbers.
            rules.append(
                (f"tenant:{tenant_id}", RateLimit(rpm=tenant_limit.rpm, tpm=tenant_limit.tpm))
            )
        feature_limit = entry.features.get(feature_id) if entry is not None else None
        if feature_limit is not None and (feature_limit.rpm or feature_limit.tpm):
            rules.append((f"tenant:{tenant_id}/feature:{feature_id}", feature_limit))
        return rules


@dataclass(frozen=True, slots=True)
class Charge:
    """Units to take from (or, when negative, give back to) one bucket."""

    name: str  # "tenant:acme rpm": the limit's name in errors and its storage key
    capacity: int  # units per WINDOW_S
    amount: int


@dataclass(slots=True, eq=False)
class Permit:
    """What :meth:`RateLimiter.acquire` took; hand it to :meth:`RateLimiter.settle` once."""

    tokens: int
    #: The tpm charges taken at acquire; settle moves them to the actual token count.
    token_charges: tuple[Charge, ...] = ()
    settled: bool = False
    #: Taken from this process's lease (:mod:`ratelimit_lease`), not from the store.
    leased: bool = False


class RateLimiter(Protocol):
    """Admits requests under rpm/tpm limits; every backend has the same semantics."""

    async def acquire(self, rules: list[tuple[str, RateLimit]], *, tokens: int) -> Permit:
        """Take one request and ``tokens`` from every rule, all or nothing.

        Raises :class:`RateLimited` (and takes nothing) when any rule lacks capacity.
        """
        ...

    async def settle(self, permit: Permit, *, actual_tokens: int) -> None:
        """Correct the tpm buckets from the estimate to ``actual_tokens``; idempotent."""
        ...

    async def aclose(self) -> None:
        """Release connections (a no-op where there are none)."""
        ...


def plan(rules: Sequence[tuple[str, RateLimit]], tokens: int) -> tuple[Charge, ...]:
    """The charges one request makes: one request per rpm, ``tokens`` per tpm.

    An estimate above a tpm capacity is clamped to it: such a request waits until the
    bucket is empty, then goes through, and settle books what it really used as debt.
    Refusing it instead would fail forever on a request that may well fit once run.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    charges: list[Charge] = []
    for key, limit in rules:
        if limit.rpm:
            charges.append(Charge(f"{key} rpm", limit.rpm, 1))
        if limit.tpm:
            charges.append(Charge(f"{key} tpm", limit.tpm, min(tokens, limit.tpm)))
    return tuple(charges)


def token_charges(charges: Sequence[Charge]) -> tuple[Charge, ...]:
    return tuple(charge for charge in charges if charge.name.endswith(" tpm"))


def settlement(permit: Permit, actual_tokens: int) -> tuple[Charge, ...]:
    """The corrections settle must apply (empty when there is nothing to do); marks settled."""
    if actual_tokens < 0:
        raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens}")
    if permit.settled:
        return ()
    permit.settled = True
    return tuple(
        Charge(charge.name, charge.capacity, actual_tokens - charge.amount)
        for charge in permit.token_charges
        if actual_tokens != charge.amount
    )


def drained(state: State | None, capacity: int, now: float) -> float:
    """The level of a bucket at ``now``: it drains ``capacity`` units per WINDOW_S."""
    if state is None:
        return 0.0
    level, updated_at = state
    return max(0.0, level - max(0.0, now - updated_at) * capacity / WINDOW_S)


def take(charges: Sequence[Charge], states: Sequence[State | None], now: float) -> list[State]:
    """New states with every charge taken, or :class:`RateLimited` if any does not fit."""
    worst: tuple[float, Charge] | None = None
    new_states: list[State] = []
    for charge, state in zip(charges, states, strict=True):
        level = drained(state, charge.capacity, now) + charge.amount
        excess = level - charge.capacity
        if excess > EPSILON:
            wait = excess * WINDOW_S / charge.capacity
            if worst is None or wait > worst[0]:
                worst = (wait, charge)
        # Never move a bucket's time backwards: with clocks of several hosts a little
        # apart, a lagging host must not make the next leading one drain twice.
        new_states.append((level, max(now, state[1]) if state else now))
    if worst is not None:
        raise rate_limited(worst[1], worst[0])
    return new_states


def give(charges: Sequence[Charge], states: Sequence[State | None], now: float) -> list[State]:
    """New states with each charge's amount added (or given back), never below empty."""
    return [
        (
            max(0.0, drained(state, charge.capacity, now) + charge.amount),
            max(now, state[1]) if state else now,
        )
        for charge, state in zip(charges, states, strict=True)
    ]


def rate_limited(charge: Charge, wait_s: float) -> RateLimited:
    """The error for ``charge`` not fitting until ``wait_s`` from now."""
    # Whole seconds, rounded up and at least 1: what a Retry-After header can carry, and
    # never so early that the retry is refused again.
    retry_after = float(max(1, math.ceil(wait_s - 1e-9)))
    return RateLimited(
        f"rate limit {charge.name} exceeded ({charge.capacity} per minute); "
        f"enough capacity frees up in {wait_s:.2f} s",
        retry_after_s=retry_after,
        limit=charge.name,
    )


class InProcessRateLimiter:
    """Buckets in a dict: one process only (tests, embedded use); thread-safe."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._states: dict[str, State] = {}
        self._lock = threading.Lock()

    async def acquire(self, rules: list[tuple[str, RateLimit]], *, tokens: int) -> Permit:
        charges = plan(rules, tokens)
        if charges:
            with self._lock:
                now = self._clock()
                new_states = take(charges, [self._states.get(c.name) for c in charges], now)
                self._states.update(zip((c.name for c in charges), new_states, strict=True))
        return Permit(tokens, token_charges(charges))

    async def settle(self, permit: Permit, *, actual_tokens: int) -> None:
        charges = settlement(permit, actual_tokens)
        if charges:
            with self._lock:
                now = self._clock()
                new_states = give(charges, [self._states.get(c.name) for c in charges], now)
                self._states.update(zip((c.name for c in charges), new_states, strict=True))

    async def aclose(self) -> None:
        return None
