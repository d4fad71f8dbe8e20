"""Rate limits without a server: config rules, the shared GCRA arithmetic, the in-process limiter.

Every backend's behaviour on a real store is in tests/integration/test_ratelimit.py.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine

from llmops.errors import RateLimited, RetryableError
from llmops.gateway.ratelimit import (
    DbRateLimiter,
    InProcessRateLimiter,
    RateLimit,
    RateLimitConfig,
    RedisRateLimiter,
    make_rate_limiter,
)
from llmops.gateway.ratelimit_core import Charge, plan, take

T0 = 1_800_000_000.0

CONFIG = RateLimitConfig.model_validate(
    {
        "default": {"rpm": 60, "tpm": 100_000},
        "tenants": {
            "acme": {"rpm": 600, "features": {"summary": {"tpm": 5000}}},
            "beta": {"features": {"chat": {"rpm": 10}}},
        },
    }
)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _no_clock() -> float:
    raise AssertionError("an acquire with no rules must not touch any state")


# --- config -------------------------------------------------------------------------


def test_a_tenant_without_an_entry_gets_the_default_as_its_own_bucket() -> None:
    assert CONFIG.rules_for("zeta", "summary") == [("tenant:zeta", RateLimit(rpm=60, tpm=100_000))]
    assert CONFIG.rules_for("omega", "x")[0][0] == "tenant:omega"


def test_a_tenant_entry_replaces_the_default_and_adds_its_feature_limits() -> None:
    assert CONFIG.rules_for("acme", "summary") == [
        ("tenant:acme", RateLimit(rpm=600)),
        ("tenant:acme/feature:summary", RateLimit(tpm=5000)),
    ]
    assert CONFIG.rules_for("acme", "chat") == [("tenant:acme", RateLimit(rpm=600))]
    # An entry with only feature limits leaves the tenant itself unlimited.
    assert CONFIG.rules_for("beta", "chat") == [("tenant:beta/feature:chat", RateLimit(rpm=10))]
    assert CONFIG.rules_for("beta", "other") == []


def test_no_config_means_no_rules() -> None:
    assert RateLimitConfig().rules_for("acme", "summary") == []


@pytest.mark.parametrize(
    "raw",
    [
        {"default": {"rpm": 0}},
        {"default": {"tpm": -5}},
        {"default": {"rps": 5}},
        {"tenants": {"acme": {"rpm": 5, "feature": {}}}},
        {"tenants": {"acme": {"features": {"x": {"rpm": 1, "features": {}}}}}},
    ],
)
def test_invalid_config_is_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate(raw)


# --- arithmetic ---------------------------------------------------------------------


def test_plan_charges_one_request_and_the_tokens_clamped_to_each_tpm_limit() -> None:
    rules = [("tenant:a", RateLimit(rpm=5, tpm=1000)), ("tenant:a/feature:f", RateLimit(tpm=300))]
    assert plan(rules, 500) == (
        Charge("tenant:a rpm", 5, 1),
        Charge("tenant:a tpm", 1000, 500),
        Charge("tenant:a/feature:f tpm", 300, 300),
    )
    with pytest.raises(ValueError, match="tokens"):
        plan(rules, -1)


def test_take_names_the_limit_that_frees_up_last() -> None:
    charges = [Charge("a rpm", 6, 1), Charge("b rpm", 2, 1)]
    full = [(6.0, T0), (2.0, T0)]
    with pytest.raises(RateLimited) as info:
        take(charges, full, T0)
    # "a" frees one request in 10 s, "b" only in 30 s: the request fits when both do.
    assert (info.value.limit, info.value.retry_after_s) == ("b rpm", 30.0)
    assert "b rpm" in str(info.value)
    assert isinstance(info.value, RetryableError)


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    charge = [Charge("a rpm", 600, 1)]  # one request frees up every 0.1 s
    with pytest.raises(RateLimited) as info:
        take(charge, [(600.0, T0)], T0)
    assert info.value.retry_after_s == 1.0
    charge = [Charge("a tpm", 7, 1)]  # 60/7 = 8.57 s
    with pytest.raises(RateLimited) as info:
        take(charge, [(7.0, T0)], T0)
    assert info.value.retry_after_s == 9.0


# --- in-process limiter -------------------------------------------------------------


async def test_no_rules_is_free_and_settles_without_touching_state() -> None:
    limiter = InProcessRateLimiter(clock=_no_clock)
    permit = await limiter.acquire([], tokens=1234)
    await limiter.settle(permit, actual_tokens=10)
    assert permit.tokens == 1234 and permit.settled


async def test_rpm_admits_exactly_the_limit_then_refuses_until_a_request_frees_up() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rules = [("tenant:a", RateLimit(rpm=3))]
    for _ in range(3):
        await limiter.acquire(rules, tokens=0)
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(rules, tokens=0)
    assert (info.value.limit, info.value.retry_after_s) == ("tenant:a rpm", 20.0)
    clock.now += 20
    await limiter.acquire(rules, tokens=0)
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, tokens=0)


async def test_an_estimate_above_the_tpm_limit_waits_for_an_empty_bucket() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rules = [("tenant:a", RateLimit(tpm=1000))]
    permit = await limiter.acquire(rules, tokens=5000)  # empty bucket: goes through
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, tokens=5000)
    # What it really used is booked: 3000 tokens is two minutes of debt past a full bucket.
    await limiter.settle(permit, actual_tokens=3000)
    clock.now += 119
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(rules, tokens=1)
    assert info.value.retry_after_s == 2.0  # 17.7 tokens over: 1.06 s at 1000 per minute
    clock.now += 1.1
    await limiter.acquire(rules, tokens=1)


async def test_settle_is_idempotent_and_refuses_negative_usage() -> None:
    limiter = InProcessRateLimiter(clock=Clock())
    rules = [("tenant:a", RateLimit(tpm=100))]
    permit = await limiter.acquire(rules, tokens=100)
    await limiter.settle(permit, actual_tokens=0)
    await limiter.settle(permit, actual_tokens=0)  # a second give-back would mint capacity
    await limiter.acquire(rules, tokens=100)
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, tokens=1)
    with pytest.raises(ValueError, match="actual_tokens"):
        await limiter.settle(await limiter.acquire([], tokens=0), actual_tokens=-1)


# --- backend selection --------------------------------------------------------------


async def test_make_rate_limiter_picks_redis_when_configured_and_the_db_otherwise() -> None:
    engine = create_engine("sqlite://")
    try:
        assert isinstance(make_rate_limiter(None, engine).shared, DbRateLimiter)
        assert isinstance(make_rate_limiter("", engine).shared, DbRateLimiter)
        # Building the Redis limiter connects to nothing: a closed port is fine here.
        limiter = make_rate_limiter("redis://127.0.0.1:1/0", engine)
        assert isinstance(limiter.shared, RedisRateLimiter)
        await limiter.aclose()
    finally:
        engine.dispose()


async def test_redis_keys_of_one_tenant_share_a_cluster_hash_slot() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", prefix="p:")
    try:
        assert limiter.key("tenant:acme rpm") == "p:{tenant:acme} rpm"
        assert limiter.key("tenant:acme/feature:sum tpm") == "p:{tenant:acme}/feature:sum tpm"
    finally:
        await limiter.aclose()


async def test_an_unreachable_redis_is_a_retryable_error_not_a_crash() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RetryableError, match="Redis") as info:
            await limiter.acquire([("tenant:a", RateLimit(rpm=1))], tokens=0)
        assert not isinstance(info.value, RateLimited)
    finally:
        await limiter.aclose()
