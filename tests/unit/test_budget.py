"""Spend-cap values with no database: windows, worst cases, scopes, money, validation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event

from llmops.errors import BudgetExceeded, ValidationError, is_retryable
from llmops.gateway.budget import (
    EPOCH,
    BudgetManager,
    CapScope,
    CapStatus,
    format_usd,
    scope_key,
    window_start,
    worst_case_cost,
)
from llmops.gateway.budget_cache import CapCache
from llmops.gateway.budget_types import parse_money
from llmops.gateway.pricebook import Price

D = Decimal
PLUS_2 = timezone(timedelta(hours=2))


def price(**overrides: Any) -> Price:
    fields: dict[str, Any] = {
        "model": "m",
        "effective_from": date(2026, 1, 1),
        "input_per_mtok": D("0.15"),
        "output_per_mtok": D("0.60"),
        "cached_input_per_mtok": D("0.075"),
        "reasoning_per_mtok": D("0"),
    }
    return Price(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("period", "at", "start"),
    [
        ("day", datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 3, 31)),
        ("day", datetime(2026, 4, 1, 0, 0, tzinfo=UTC), datetime(2026, 4, 1)),
        # 01:30 in UTC+2 is still the previous UTC day: windows are UTC, whatever the clock.
        ("day", datetime(2026, 4, 1, 1, 30, tzinfo=PLUS_2), datetime(2026, 3, 31)),
        ("month", datetime(2026, 3, 31, 23, 59, tzinfo=UTC), datetime(2026, 3, 1)),
        ("month", datetime(2026, 4, 1, 0, 0, tzinfo=UTC), datetime(2026, 4, 1)),
        ("month", datetime(2024, 2, 29, 12, 0, tzinfo=UTC), datetime(2024, 2, 1)),
        ("total", datetime(2026, 4, 1, 0, 0, tzinfo=UTC), datetime(1970, 1, 1)),
    ],
)
def test_windows_start_at_utc_midnight_the_first_of_the_month_or_the_epoch(
    period: str, at: datetime, start: datetime
) -> None:
    assert window_start(period, at) == start.replace(tzinfo=UTC)
    assert window_start(period, at).tzinfo is not None


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValidationError, match="period must be one of day, month, total"):
        window_start("week", datetime.now(UTC))
    assert datetime(1970, 1, 1, tzinfo=UTC) == EPOCH


def test_worst_case_prices_every_input_token_and_max_tokens_at_the_dearer_output_rate() -> None:
    # 1000 x 0.15 + 500 x 0.60 micro-dollars; the cache discount is never assumed.
    assert worst_case_cost(price(), 1000, 500) == D("0.00045")
    # Reasoning dearer than output: max_tokens may all be reasoning.
    assert worst_case_cost(price(reasoning_per_mtok=D("2.40")), 1000, 500) == D("0.00135")
    assert worst_case_cost(price(free=True), 10**6, 10**6) == 0
    assert worst_case_cost(price(), 0, 0) == 0


def test_worst_case_is_exact_and_rounds_up_at_the_ledger_scale() -> None:
    odd = price(input_per_mtok=D("0.0000001"), output_per_mtok=D("0"))
    # 3 x 1e-7 / 1e6 = 3e-13, below the ledger's 12 places: held as 1e-12, never 0.
    assert worst_case_cost(odd, 3, 0) == D("0.000000000001")
    assert isinstance(worst_case_cost(price(), 7, 11), Decimal)


def test_worst_case_refuses_negative_token_counts() -> None:
    with pytest.raises(ValidationError):
        worst_case_cost(price(), -1, 10)


@pytest.mark.parametrize(
    ("tenant", "feature", "key"),
    [
        ("acme", None, "tenant:acme"),
        (None, "summary", "feature:summary"),
        ("acme", "summary", "tenant:acme/feature:summary"),
        ("a:b", "c", "tenant:a:b/feature:c"),
    ],
)
def test_scope_keys_round_trip(tenant: str | None, feature: str | None, key: str) -> None:
    assert scope_key(tenant, feature) == key
    assert CapScope.parse(key) == CapScope(tenant, feature)


@pytest.mark.parametrize(
    "key", ["", "acme", "user:acme", "feature:x/tenant:y", "tenant:a/tenant:b", "tenant:"]
)
def test_malformed_scope_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        CapScope.parse(key)


@pytest.mark.parametrize(
    ("tenant", "feature"), [(None, None), ("a/b", None), (None, ""), ("x" * 65, None)]
)
def test_a_scope_needs_a_tenant_or_feature_with_a_plain_id(
    tenant: str | None, feature: str | None
) -> None:
    with pytest.raises(ValidationError):
        CapScope(tenant, feature)


def test_money_is_parsed_exactly_and_never_from_float() -> None:
    assert parse_money("0.1", "x") + parse_money("0.2", "x") == D("0.3")
    assert parse_money(3, "x") == D(3)
    assert parse_money(D("1e-13"), "x", round_up=True) == D("0.000000000001")
    assert parse_money(D("1e-13"), "x") == 0
    for bad in (0.1, True, "abc", "NaN", "Infinity", D("-0.01"), None):
        with pytest.raises(ValidationError):
            parse_money(bad, "x")


@pytest.mark.parametrize(
    ("amount", "text"),
    [("1.5", "$1.50"), ("0.0042", "$0.0042"), ("10", "$10.00"), ("0.000000000001", "$0.00")],
)
def test_format_usd(amount: str, text: str) -> None:
    assert format_usd(D(amount)) == text


def test_cap_status_remaining_never_goes_below_zero() -> None:
    cap = CapStatus(
        id=1,
        scope_key="tenant:a",
        tenant_id="a",
        feature_id=None,
        period="day",
        mode="hard",
        limit_usd=D(2),
        window_start=EPOCH,
        spent_usd=D("2.5"),
        reserved_usd=D("0.1"),
    )
    assert cap.remaining_usd == 0
    assert cap.used_pct == D("125.00")


def test_budget_exceeded_is_permanent() -> None:
    assert not is_retryable(BudgetExceeded("over"))


@pytest.fixture
def idle_engine() -> Iterator[Engine]:
    """An engine that fails the test if anything reaches it."""
    engine = create_engine("sqlite://")

    def refuse(*_: Any) -> None:
        raise AssertionError("input validation touched the database")

    event.listen(engine, "connect", refuse)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit_usd": D(0)}, "must be positive"),
        ({"limit_usd": D("-1")}, "must not be negative"),
        ({"limit_usd": 1.5}, "never float"),
        ({"tenant_id": None}, "needs a tenant, a feature or both"),
        ({"period": "week"}, "period must be one of"),
        ({"mode": "strict"}, "mode must be one of"),
    ],
)
def test_set_cap_validates_before_touching_the_database(
    idle_engine: Engine, changes: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "tenant_id": "acme",
        "feature_id": None,
        "limit_usd": D(1),
        "period": "day",
        "mode": "hard",
        **changes,
    }
    with pytest.raises(ValidationError, match=message):
        BudgetManager(idle_engine).set_cap(**args)


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_usd": D("-0.01")},
        {"amount_usd": 0.5},
        {"request_id": ""},
        {"request_id": "r" * 41},
        {"tenant_id": ""},
        {"feature_id": "a/b"},
    ],
)
def test_reserve_validates_before_touching_the_database(
    idle_engine: Engine, changes: dict[str, Any]
) -> None:
    args: dict[str, Any] = {
        "request_id": "r1",
        "tenant_id": "acme",
        "feature_id": "chat",
        "amount_usd": D(1),
        **changes,
    }
    with pytest.raises(ValidationError):
        BudgetManager(idle_engine).reserve(**args)


def test_settle_refuses_a_negative_cost(idle_engine: Engine) -> None:
    with pytest.raises(ValidationError):
        BudgetManager(idle_engine).settle("bres_x", D("-1"))


def test_reservation_ttl_must_be_positive(idle_engine: Engine) -> None:
    with pytest.raises(ValidationError):
        BudgetManager(idle_engine, reservation_ttl=timedelta(0))


class Loader:
    """Cap rows for a CapCache, counting reads; ``during`` runs inside the first read."""

    def __init__(self, during: Any = None) -> None:
        self.reads = 0
        self.during = during
        self.rows = [
            {"id": 1, "tenant_id": "acme", "feature_id": None, "period": "day"},
            {"id": 2, "tenant_id": "acme", "feature_id": "chat", "period": "month"},
            {"id": 3, "tenant_id": None, "feature_id": "chat", "period": "total"},
            {"id": 4, "tenant_id": "globex", "feature_id": None, "period": "day"},
        ]

    def __call__(self) -> list[dict[str, Any]]:
        self.reads += 1
        if self.during and self.reads == 1:
            self.during()
        return self.rows


def test_cap_cache_finds_every_cap_that_applies_and_reads_once_per_ttl() -> None:
    load = Loader()
    cache = CapCache(load, ttl=3600)
    assert [ref.id for ref in cache.applicable("acme", "chat")] == [1, 2, 3]
    assert [ref.id for ref in cache.applicable("acme", "search")] == [1]
    assert [ref.id for ref in cache.applicable("initech", "chat")] == [3]
    assert cache.applicable("initech", "search") == []
    assert load.reads == 1
    assert cache.known_periods() == {1: "day", 2: "month", 3: "total", 4: "day"}
    cache.invalidate()
    assert cache.known_periods() == {}
    cache.applicable("acme", "chat")
    assert load.reads == 2


def test_cap_cache_with_no_ttl_reads_every_time() -> None:
    load = Loader()
    cache = CapCache(load, ttl=0)
    for _ in range(3):
        cache.applicable("acme", "chat")
    assert load.reads == 3


def test_a_cap_list_read_across_an_invalidation_is_used_once_then_read_again() -> None:
    cache: CapCache
    load = Loader(during=lambda: cache.invalidate())  # a set_cap lands mid-read
    cache = CapCache(load, ttl=3600)
    cache.applicable("acme", "chat")
    cache.applicable("acme", "chat")
    assert load.reads == 2
    cache.applicable("acme", "chat")
    assert load.reads == 2
