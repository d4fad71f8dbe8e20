"""Leased rate limits: slices of a shared bucket admitted from memory, exactly.

The shared stores are the real ones (the ops DB on SQLite and Postgres, Redis); a
counting wrapper shows how few round trips the slices leave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine

from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.errors import RateLimited
from llmops.gateway.ratelimit import (
    DbRateLimiter,
    LeasedRateLimiter,
    RateLimit,
    RedisRateLimiter,
)
from llmops.gateway.ratelimit_core import Charge, Permit

T0 = 1_800_000_000.0
RULES = [("tenant:acme", RateLimit(rpm=1000, tpm=1_000_000))]


class Counting:
    """A shared limiter that counts the round trips made to it."""

    def __init__(self, inner: DbRateLimiter | RedisRateLimiter) -> None:
        self.inner = inner
        self.trips = 0

    async def acquire(self, rules: list[tuple[str, RateLimit]], *, tokens: int) -> Permit:
        self.trips += 1
        return await self.inner.acquire(rules, tokens=tokens)

    async def settle(self, permit: Permit, *, actual_tokens: int) -> None:
        self.trips += 1
        await self.inner.settle(permit, actual_tokens=actual_tokens)

    async def take(self, charges: Sequence[Charge]) -> None:
        self.trips += 1
        await self.inner.take(charges)

    async def give(self, charges: Sequence[Charge]) -> None:
        self.trips += 1
        await self.inner.give(charges)

    async def aclose(self) -> None:
        await self.inner.aclose()


Factory = Callable[[], tuple[LeasedRateLimiter, Counting]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"])
async def make_leased(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Leased limiters on one shared store (a process each, in production)."""
    made: list[LeasedRateLimiter] = []
    engine: Engine | None = None
    if request.param != "redis":
        url = request.getfixturevalue(f"{request.param}_url")
        upgrade(url)
        engine = make_engine(url)

    def factory() -> tuple[LeasedRateLimiter, Counting]:
        shared: DbRateLimiter | RedisRateLimiter
        if engine is not None:
            shared = DbRateLimiter(engine, clock=lambda: T0)
        else:
            url, prefix = (request.getfixturevalue(n) for n in ("redis_url", "redis_prefix"))
            shared = RedisRateLimiter(url, prefix=prefix, clock=lambda: T0)
        counting = Counting(shared)
        limiter = LeasedRateLimiter(counting, max_age_s=3600)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter, counting

    yield factory
    for limiter in made:
        await limiter.aclose()
    if engine is not None:
        engine.dispose()


async def _admit(limiter: LeasedRateLimiter, n: int, tokens: int = 10) -> int:
    admitted = 0
    for _ in range(n):
        try:
            await limiter.acquire(RULES, tokens=tokens)
        except RateLimited:
            continue
        admitted += 1
    return admitted


async def test_one_process_admits_exactly_the_limit_from_slices(make_leased: Factory) -> None:
    limiter, shared = make_leased()
    assert await _admit(limiter, 1000) == 1000
    assert shared.trips <= 60  # ~50 slices of 2%, not a round trip per call
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(RULES, tokens=10)
    assert refused.value.retry_after_s >= 1
    assert "tenant:acme rpm" in str(refused.value)


async def test_processes_share_the_limit_and_never_exceed_it(make_leased: Factory) -> None:
    one, _ = make_leased()
    two, _ = make_leased()
    first = await _admit(one, 600)
    second = await _admit(two, 600)  # what one leased but did not use is not free yet
    assert first == 600
    assert first + second <= 1000
    await one.upkeep(everything=True)  # a process returns its unused slices
    third = await _admit(two, 600)
    assert first + second + third == 1000  # exactly the limit, across both


async def test_small_limits_go_to_the_shared_store_call_by_call(make_leased: Factory) -> None:
    limiter, shared = make_leased()
    rules = [("tenant:tiny", RateLimit(rpm=5))]
    admitted = 0
    for _ in range(8):
        try:
            permit = await limiter.acquire(rules, tokens=0)
        except RateLimited:
            continue
        assert not permit.leased
        admitted += 1
    assert admitted == 5
    assert shared.trips == 8


async def test_unused_tokens_return_to_the_slice_and_extra_ones_are_debt(
    make_leased: Factory,
) -> None:
    limiter, shared = make_leased()
    rules = [("tenant:acme", RateLimit(tpm=100_000))]
    permit = await limiter.acquire(rules, tokens=1000)
    trips = shared.trips
    await limiter.settle(permit, actual_tokens=400)  # 600 back to the slice, in memory
    assert shared.trips == trips
    # The slice (2,000 tokens) now has 1,600 free: 900 + 500 more fit without a trip.
    await limiter.acquire(rules, tokens=900)
    big = await limiter.acquire(rules, tokens=500)
    assert shared.trips == trips
    await limiter.settle(big, actual_tokens=50_000)  # far past the slice: debt, shared
    assert shared.trips > trips
    refused: Any = None
    try:
        await limiter.acquire(rules, tokens=60_000)
    except RateLimited as exc:
        refused = exc
    assert refused is not None  # the debt counts against the shared bucket
