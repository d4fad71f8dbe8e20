"""Rate limits on every backend: in-process, the ops DB (SQLite, Postgres) and Redis.

The same contract runs on each, with an injected clock. Then two OS processes hammer one
limit to show the DB and Redis backends are atomic across processes.

Redis tests use ``LLMOPS_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) and skip
when that default does not answer; a URL set explicitly but unreachable fails instead.
Each test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.errors import RateLimited
from llmops.gateway.ratelimit import (
    DbRateLimiter,
    InProcessRateLimiter,
    RateLimit,
    RateLimiter,
    RedisRateLimiter,
)

#: On a whole microsecond, so the DB's stored timestamps read back exactly.
T0 = 1_800_000_000.0

Factory = Callable[[Callable[[], float]], RateLimiter]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _migrated_engine(url: str) -> Engine:
    upgrade(url)
    return make_engine(url)


@pytest.fixture(
    params=["inprocess", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"]
)
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Builds limiters of one backend; those built by one test share its state."""
    made: list[RateLimiter] = []
    engine: Engine | None = None
    if request.param in ("sqlite", "postgres"):
        engine = _migrated_engine(request.getfixturevalue(f"{request.param}_url"))

    def factory(clock: Callable[[], float]) -> RateLimiter:
        limiter: RateLimiter
        if request.param == "inprocess":
            # Its state lives in the object: "sharing" is handing out the same one.
            limiter = made[0] if made else InProcessRateLimiter(clock=clock)
        elif engine is not None:
            limiter = DbRateLimiter(engine, clock=clock)
        else:
            url, prefix = (request.getfixturevalue(n) for n in ("redis_url", "redis_prefix"))
            limiter = RedisRateLimiter(url, prefix=prefix, clock=clock)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in set(made):
        await limiter.aclose()
    if engine is not None:
        engine.dispose()


async def _admitted(
    limiter: RateLimiter, rules: list[tuple[str, RateLimit]], tokens: int, tries: int
) -> int:
    count = 0
    for _ in range(tries):
        try:
            await limiter.acquire(rules, tokens=tokens)
        except RateLimited:
            continue
        count += 1
    return count


# --- the contract, on every backend -------------------------------------------------


async def test_rpm_admits_exactly_the_limit_then_says_when_to_retry(make_limiter: Factory) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    rules = [("tenant:acme", RateLimit(rpm=6))]
    assert await _admitted(limiter, rules, tokens=0, tries=6) == 6
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(rules, tokens=0)
    assert info.value.limit == "tenant:acme rpm"
    assert "tenant:acme rpm" in str(info.value)
    assert info.value.retry_after_s == 10.0  # 6 per minute: one frees up every 10 s
    clock.now += 9.5
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(rules, tokens=0)
    assert info.value.retry_after_s == 1.0
    clock.now += 0.5
    assert await _admitted(limiter, rules, tokens=0, tries=3) == 1


async def test_tpm_admits_tokens_up_to_the_limit(make_limiter: Factory) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    rules = [("tenant:acme", RateLimit(tpm=1000))]
    assert await _admitted(limiter, rules, tokens=300, tries=5) == 3
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(rules, tokens=300)
    # 900 held + 300 asked = 200 over; 1000 per minute drains 200 in 12 s.
    assert (info.value.limit, info.value.retry_after_s) == ("tenant:acme tpm", 12.0)
    await limiter.acquire(rules, tokens=100)  # what is left still fits
    clock.now += info.value.retry_after_s
    await limiter.acquire(rules, tokens=200)


async def test_a_refused_request_takes_nothing_from_any_limit(make_limiter: Factory) -> None:
    limiter = make_limiter(Clock())
    tenant = ("tenant:acme", RateLimit(rpm=10, tpm=10_000))
    summary = [tenant, ("tenant:acme/feature:summary", RateLimit(rpm=3))]
    chat = [tenant]
    assert await _admitted(limiter, summary, tokens=100, tries=8) == 3
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(summary, tokens=100)
    assert info.value.limit == "tenant:acme/feature:summary rpm"
    # The 6 refused summary requests took no tenant requests and no tokens.
    assert await _admitted(limiter, chat, tokens=100, tries=10) == 7
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(chat, tokens=100)
    assert info.value.limit == "tenant:acme rpm"


async def test_a_request_refused_for_tokens_takes_no_request(make_limiter: Factory) -> None:
    limiter = make_limiter(Clock())
    rules = [("tenant:acme", RateLimit(rpm=3, tpm=1000))]
    await limiter.acquire(rules, tokens=900)
    for _ in range(5):
        with pytest.raises(RateLimited, match="tpm"):
            await limiter.acquire(rules, tokens=500)
    assert await _admitted(limiter, rules, tokens=50, tries=5) == 2  # rpm 3: 1 + 2


async def test_the_window_slides(make_limiter: Factory) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    rules = [("tenant:acme", RateLimit(rpm=60))]
    assert await _admitted(limiter, rules, tokens=0, tries=70) == 60
    clock.now += 30  # half a minute frees half the limit, not all of it and not none
    assert await _admitted(limiter, rules, tokens=0, tries=40) == 30
    clock.now += 0.5
    assert await _admitted(limiter, rules, tokens=0, tries=5) == 0
    clock.now += 0.5
    assert await _admitted(limiter, rules, tokens=0, tries=5) == 1
    clock.now += 600  # idle for long: a full bucket again, but never more than the limit
    assert await _admitted(limiter, rules, tokens=0, tries=70) == 60


async def test_settle_gives_back_unused_tokens_and_books_extra_ones(make_limiter: Factory) -> None:
    limiter = make_limiter(Clock())
    rules = [("tenant:acme", RateLimit(tpm=1000)), ("tenant:acme/feature:s", RateLimit(tpm=2000))]
    permit = await limiter.acquire(rules, tokens=800)  # input + max_tokens
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, tokens=800)
    await limiter.settle(permit, actual_tokens=200)  # the answer was short
    await limiter.settle(permit, actual_tokens=200)  # settling twice changes nothing
    await limiter.acquire(rules, tokens=800)
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, tokens=1)

    other = [("tenant:beta", RateLimit(tpm=1000))]
    permit = await limiter.acquire(other, tokens=100)
    await limiter.settle(permit, actual_tokens=900)  # used more than estimated
    await limiter.acquire(other, tokens=100)
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(other, tokens=1)
    assert info.value.limit == "tenant:beta tpm"


async def test_limiters_on_one_store_share_their_limits(make_limiter: Factory) -> None:
    clock = Clock()
    first, second = make_limiter(clock), make_limiter(clock)
    rules = [("tenant:acme", RateLimit(rpm=4))]
    assert await _admitted(first, rules, tokens=0, tries=3) == 3
    assert await _admitted(second, rules, tokens=0, tries=3) == 1
    with pytest.raises(RateLimited):
        await first.acquire(rules, tokens=0)


# --- the ops DB table ---------------------------------------------------------------


async def test_the_db_keeps_one_row_per_limit_whatever_the_traffic(db_engine: Engine) -> None:
    assert {c["name"] for c in inspect(db_engine).get_columns("rate_limit_buckets")} == {
        "key",
        "level",
        "updated_at",
    }
    clock = Clock()
    limiter = DbRateLimiter(db_engine, clock=clock)
    rules = [
        ("tenant:acme", RateLimit(rpm=5, tpm=100)),
        ("tenant:acme/feature:s", RateLimit(rpm=2)),
    ]
    for _ in range(4):
        permit = await limiter.acquire(rules, tokens=10)
        await limiter.settle(permit, actual_tokens=5)
        clock.now += 3600
    with db_engine.connect() as connection:
        keys = connection.execute(text("SELECT key FROM rate_limit_buckets ORDER BY key")).all()
    assert [key for (key,) in keys] == [
        "tenant:acme rpm",
        "tenant:acme tpm",
        "tenant:acme/feature:s rpm",
    ]


# --- shared across processes --------------------------------------------------------

LIMIT = 40
TASKS, TRIES = 4, 25  # per process: 100 attempts, 200 in all, for 40 requests


def _hammer(
    kind: str, url: str, prefix: str, frozen: bool, barrier: Any, results: Any
) -> None:  # runs in a spawned process
    async def run() -> tuple[int, int]:
        clock: Callable[[], float] = (lambda: T0) if frozen else time.time
        limiter: RateLimiter
        engine = None
        if kind == "redis":
            limiter = RedisRateLimiter(url, prefix=prefix, clock=clock)
        else:
            engine = make_engine(url)
            limiter = DbRateLimiter(engine, clock=clock)
        rules = [("tenant:acme", RateLimit(rpm=LIMIT))]
        # Connected (and the Redis script loaded) before the start line, on another key.
        await limiter.acquire([(f"warmup:{os.getpid()}", RateLimit(rpm=1))], tokens=0)
        await asyncio.to_thread(barrier.wait)
        counts = await asyncio.gather(*(_admitted(limiter, rules, 0, TRIES) for _ in range(TASKS)))
        await limiter.aclose()
        if engine is not None:
            engine.dispose()
        return sum(counts), TASKS * TRIES

    results.put(asyncio.run(run()))


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-clock", "real-clock"])
@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"]
)
def test_two_processes_share_one_limit(
    kind: str, frozen: bool, request: pytest.FixtureRequest
) -> None:
    prefix = ""
    if kind == "redis":
        url, prefix = (request.getfixturevalue(n) for n in ("redis_url", "redis_prefix"))
    else:
        url = request.getfixturevalue(f"{kind}_url")
        upgrade(url)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_hammer, args=(kind, url, prefix, frozen, barrier, results))
        for _ in range(2)
    ]
    started = time.time()
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    elapsed = time.time() - started
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0, 0]
    admitted = sum(count for count, _ in outcomes)
    assert sum(tries for _, tries in outcomes) == 2 * TASKS * TRIES
    if frozen:
        assert admitted == LIMIT
    else:
        # The documented bound: N at once plus what drains meanwhile (N per minute).
        assert LIMIT <= admitted <= LIMIT + LIMIT * elapsed / 60 + 1
