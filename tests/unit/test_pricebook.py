"""The price book: effective-dated prices, exact Decimal cost, never a silent zero."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from llmops.errors import PricingError
from llmops.gateway.pricebook import Price, PriceBook, Usage


def _price(
    model: str,
    day: date,
    inp: str,
    out: str,
    cached: str | None = None,
    reasoning: str | None = None,
) -> Price:
    return Price(
        model=model,
        effective_from=day,
        input_per_mtok=Decimal(inp),
        output_per_mtok=Decimal(out),
        cached_input_per_mtok=Decimal(cached if cached is not None else inp),
        reasoning_per_mtok=Decimal(reasoning if reasoning is not None else out),
    )


MINI = _price("openai/gpt-4o-mini", date(2024, 7, 18), "0.15", "0.60", cached="0.075")
O4 = _price("openai/o4-mini", date(2025, 4, 16), "1.10", "4.40", cached="0.275", reasoning="8.80")
GPT4O_OLD = _price("openai/gpt-4o", date(2024, 5, 13), "5.00", "15.00")
GPT4O_NEW = _price("openai/gpt-4o", date(2024, 10, 1), "2.50", "10.00", cached="1.25")
LLAMA = Price(
    model="openai/llama-3.1-8b",
    effective_from=date(2000, 1, 1),
    input_per_mtok=Decimal(0),
    output_per_mtok=Decimal(0),
    cached_input_per_mtok=Decimal(0),
    reasoning_per_mtok=Decimal(0),
    free=True,
)
# Given out of date order on purpose: the book sorts them.
BOOK = PriceBook([GPT4O_NEW, MINI, LLAMA, GPT4O_OLD, O4])
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_plain_input_and_output_cost_is_exact() -> None:
    cost, version = BOOK.cost("openai/gpt-4o-mini", Usage(1234, 567), AT)
    # 1234 * 0.15 + 567 * 0.60 = 185.1 + 340.2 = 525.3 per million tokens
    assert cost == Decimal("0.0005253")
    assert isinstance(cost, Decimal)
    assert version == "openai/gpt-4o-mini@2024-07-18"


def test_one_token_costs_a_millionth_of_the_rate_without_rounding() -> None:
    cost, _ = BOOK.cost("openai/gpt-4o-mini", Usage(input_tokens=1), AT)
    assert cost == Decimal("0.00000015")
    cost, _ = BOOK.cost("openai/gpt-4o-mini", Usage(cached_tokens=1, input_tokens=1), AT)
    assert cost == Decimal("0.000000075")


def test_many_small_costs_sum_exactly() -> None:
    one, _ = BOOK.cost("openai/gpt-4o-mini", Usage(7, 3), AT)
    assert sum([one] * 1000, Decimal(0)) == Decimal("0.0028500")  # 1000 * (1.05 + 1.8) / 1e6


def test_cached_input_tokens_use_the_cached_rate() -> None:
    usage = Usage(input_tokens=1000, output_tokens=200, cached_tokens=400)
    cost, _ = BOOK.cost("openai/gpt-4o-mini", usage, AT)
    # 600 * 0.15 + 400 * 0.075 + 200 * 0.60 = 90 + 30 + 120 = 240
    assert cost == Decimal("0.00024")


def test_reasoning_tokens_use_the_reasoning_rate() -> None:
    usage = Usage(input_tokens=100, output_tokens=500, cached_tokens=50, reasoning_tokens=300)
    cost, version = BOOK.cost("openai/o4-mini", usage, AT)
    # 50 * 1.10 + 50 * 0.275 + 200 * 4.40 + 300 * 8.80 = 55 + 13.75 + 880 + 2640 = 3588.75
    assert cost == Decimal("0.00358875")
    assert version == "openai/o4-mini@2025-04-16"


def test_defaults_price_cached_as_input_and_reasoning_as_output() -> None:
    plain, _ = BOOK.cost("openai/gpt-4o", Usage(1000, 1000), datetime(2024, 6, 1, tzinfo=UTC))
    detailed, _ = BOOK.cost(
        "openai/gpt-4o",
        Usage(1000, 1000, cached_tokens=600, reasoning_tokens=700),
        datetime(2024, 6, 1, tzinfo=UTC),
    )
    assert plain == detailed == Decimal("0.02")  # 1000 * 5 + 1000 * 15


def test_cached_and_reasoning_counts_are_capped_at_their_totals() -> None:
    # A provider reporting more cached than prompt tokens must not produce a negative line.
    usage = Usage(input_tokens=10, output_tokens=5, cached_tokens=50, reasoning_tokens=9)
    cost, _ = BOOK.cost("openai/o4-mini", usage, AT)
    assert cost == Decimal("0.00004675")  # 10 * 0.275 + 5 * 8.80 = 2.75 + 44


@pytest.mark.parametrize(
    ("at", "rate", "version"),
    [
        (datetime(2024, 5, 13, 0, 0, tzinfo=UTC), "5.00", "openai/gpt-4o@2024-05-13"),
        (datetime(2024, 9, 30, 23, 59, 59, tzinfo=UTC), "5.00", "openai/gpt-4o@2024-05-13"),
        (datetime(2024, 10, 1, 0, 0, tzinfo=UTC), "2.50", "openai/gpt-4o@2024-10-01"),
        (datetime(2030, 1, 1, tzinfo=UTC), "2.50", "openai/gpt-4o@2024-10-01"),
        # 01:00 in UTC+2 is still Sept 30 in UTC: the day is taken in UTC.
        (
            datetime(2024, 10, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            "5.00",
            "openai/gpt-4o@2024-05-13",
        ),
        # 20:00 on Sept 30 in UTC-5 is Oct 1 in UTC.
        (
            datetime(2024, 9, 30, 20, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2.50",
            "openai/gpt-4o@2024-10-01",
        ),
    ],
)
def test_effective_dating_at_the_boundary(at: datetime, rate: str, version: str) -> None:
    price = BOOK.price_for("openai/gpt-4o", at)
    assert price.input_per_mtok == Decimal(rate)
    assert price.version == version
    cost, cost_version = BOOK.cost("openai/gpt-4o", Usage(input_tokens=1_000_000), at)
    assert (cost, cost_version) == (Decimal(rate), version)


def test_before_the_first_price_is_an_error() -> None:
    with pytest.raises(PricingError, match=r"2024-05-12.*2024-05-13"):
        BOOK.cost("openai/gpt-4o", Usage(10, 10), datetime(2024, 5, 12, 23, 59, tzinfo=UTC))


def test_unknown_model_is_an_error_never_zero() -> None:
    with pytest.raises(PricingError, match="openai/gpt-5"):
        BOOK.cost("openai/gpt-5", Usage(10, 10), AT)
    with pytest.raises(PricingError):
        PriceBook([]).price_for("openai/gpt-4o-mini", AT)


def test_free_model_costs_zero_with_a_version() -> None:
    cost, version = BOOK.cost("openai/llama-3.1-8b", Usage(10_000, 5_000, 100, 100), AT)
    assert cost == Decimal(0)
    assert version == "openai/llama-3.1-8b@2000-01-01"


def test_models_lists_every_priced_model() -> None:
    assert BOOK.models() == {
        "openai/gpt-4o-mini",
        "openai/gpt-4o",
        "openai/o4-mini",
        "openai/llama-3.1-8b",
    }
