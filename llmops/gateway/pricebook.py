"""The price book: effective-dated prices per model, exact Decimal cost per call.

Prices are given per million tokens. A call is priced with the newest entry whose
``effective_from`` is on or before the call's start; its ``version`` is recorded on the
request_log row. A model with no price is an error, never a silent zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from llmops.errors import PricingError

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """One effective-dated price of one model (USD per million tokens)."""

    model: str
    effective_from: date
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    reasoning_per_mtok: Decimal
    free: bool = False

    @property
    def version(self) -> str:
        return f"{self.model}@{self.effective_from.isoformat()}"


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class PriceBook:
    """All prices, looked up by model and time."""

    def __init__(self, prices: list[Price]) -> None:
        self._by_model: dict[str, list[Price]] = {}
        for price in sorted(prices, key=lambda p: p.effective_from):
            self._by_model.setdefault(price.model, []).append(price)

    def models(self) -> set[str]:
        return set(self._by_model)

    def price_for(self, model: str, at: datetime) -> Price:
        """The price in force for ``model`` at ``at`` (aware UTC)."""
        entries = self._by_model.get(model)
        if not entries:
            raise PricingError(f"model {model!r} has no price in the price book")
        day = at.astimezone(UTC).date()
        current = None
        for entry in entries:
            if entry.effective_from <= day:
                current = entry
        if current is None:
            raise PricingError(
                f"model {model!r} has no price effective on {day.isoformat()} "
                f"(first price starts {entries[0].effective_from.isoformat()})"
            )
        return current

    def cost(self, model: str, usage: Usage, at: datetime) -> tuple[Decimal, str]:
        """Exact cost in USD of ``usage`` on ``model`` at ``at``, and the price version."""
        price = self.price_for(model, at)
        if price.free:
            return Decimal(0), price.version
        cached = min(usage.cached_tokens, usage.input_tokens)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        micro = (
            (usage.input_tokens - cached) * price.input_per_mtok
            + cached * price.cached_input_per_mtok
            + (usage.output_tokens - reasoning) * price.output_per_mtok
            + reasoning * price.reasoning_per_mtok
        )
        return micro / _MILLION, price.version
