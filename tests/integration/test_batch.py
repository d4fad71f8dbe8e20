"""Batches through the gateway: bounded concurrency, re-runs never pay twice, true summaries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.models import RequestLog
from llmops.errors import ValidationError
from llmops.gateway.batch import BatchItem, ItemOutcome, run_items
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import Gateway
from llmops.gateway.router import build_router
from llmops.gateway.summary import batch_summary
from llmops.sim import SimConfig, SimServer

SIM_MODELS: dict[str, Any] = {"gpt-4o-mini": {"cached_tokens_ratio": 0.25}, "solo": {}, "llama": {}}


def gateway_config(base_url: str) -> GatewayConfig:
    def dep(dep_id: str, model: str) -> dict[str, Any]:
        return {"id": dep_id, "model": model, "api_base": base_url, "api_key": "sk-sim"}

    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 10, "num_retries": 0},
            "model_groups": {
                "fast": {"deployments": [dep("b-mini", "openai/gpt-4o-mini")]},
                "solo": {"deployments": [dep("b-solo", "openai/solo")]},
                "open": {"deployments": [dep("b-llama", "openai/llama")]},
            },
            "prices": [
                {
                    "model": "openai/gpt-4o-mini",
                    "effective_from": "2024-07-18",
                    "input_per_mtok": "0.15",
                    "output_per_mtok": "0.60",
                    "cached_input_per_mtok": "0.075",
                },
                {"model": "openai/solo", "input_per_mtok": "3", "output_per_mtok": "15"},
                {"model": "openai/llama", "free": True},
            ],
        }
    )


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig.model_validate({"seed": 5, "models": SIM_MODELS})) as server:
        yield server


@pytest.fixture
def gateway(sim: SimServer, make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway(gateway_config(sim.base_url))


def items(
    n: int, group: str = "fast", prefix: str = "item", tenant: str = "acme"
) -> list[BatchItem]:
    return [
        BatchItem(
            item_id=f"{prefix}-{i:03d}",
            tenant_id=tenant,
            feature_id="ticket-summary",
            model_group=group,
            messages=[{"role": "user", "content": f"Summarize ticket {prefix} #{i} for {tenant}."}],
            max_tokens=30,
            prompt_name="summarize",
            prompt_version=2,
        )
        for i in range(n)
    ]


def log_rows(engine: Engine) -> list[RequestLog]:
    with Session(engine) as session:
        return list(session.exec(select(RequestLog).order_by(col(RequestLog.id))).all())


def provider_calls(sim: SimServer) -> int:
    total: int = sim.stats()["total"]
    return total


async def test_batch_runs_every_item_and_a_rerun_pays_nothing(
    sim: SimServer, gateway: Gateway, db_engine: Engine
) -> None:
    batch = items(12)
    first = await run_items(gateway, batch, concurrency=4)

    assert [o.item_id for o in first] == [i.item_id for i in batch]  # input order
    assert all(o.status == "ok" and not o.reused for o in first)
    assert all(o.text and o.request_id and o.cost_usd > 0 for o in first)
    assert provider_calls(sim) == 12
    rows = log_rows(db_engine)
    assert len(rows) == 12
    by_action = {r.action_id: r for r in rows}
    for outcome, item in zip(first, batch, strict=True):
        row = by_action[item.item_id]
        assert (row.request_id, row.response_text) == (outcome.request_id, outcome.text)
        assert row.cost_usd == outcome.cost_usd
        assert (row.tenant_id, row.feature_id) == ("acme", "ticket-summary")
        assert row.model_group == "fast"
        assert (row.prompt_name, row.prompt_version) == ("summarize", 2)

    again = await run_items(gateway, batch, concurrency=4)

    assert provider_calls(sim) == 12  # nothing new reached the provider
    assert len(log_rows(db_engine)) == 12
    assert all(o.status == "ok" and o.reused for o in again)
    assert [(o.request_id, o.text, o.cost_usd) for o in again] == [
        (o.request_id, o.text, o.cost_usd) for o in first
    ]


async def test_concurrency_is_bounded(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure({"models": {**SIM_MODELS, "gpt-4o-mini": {"ttft_ms": 40}}})
    config = gateway_config(sim.base_url)

    class CountingRouter:
        """The real router, counting how many calls are in flight at once."""

        def __init__(self) -> None:
            self.inner = build_router(config)
            self.active = self.peak = 0

        async def acompletion(self, **kwargs: Any) -> Any:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                return await self.inner.acompletion(**kwargs)
            finally:
                self.active -= 1

    router = CountingRouter()
    gateway = make_gateway(config, router=router)
    outcomes = await run_items(gateway, items(10), concurrency=3)
    assert all(o.status == "ok" for o in outcomes)
    assert router.peak == 3


async def test_duplicate_item_ids_are_rejected_before_any_call(
    sim: SimServer, gateway: Gateway, db_engine: Engine
) -> None:
    batch = items(3)
    batch.append(batch[1].model_copy(update={"messages": [{"role": "user", "content": "x"}]}))
    with pytest.raises(ValidationError, match="unique"):
        await run_items(gateway, batch, concurrency=2)
    assert provider_calls(sim) == 0
    assert log_rows(db_engine) == []


async def test_failed_items_are_reported_and_only_they_run_again(
    sim: SimServer, gateway: Gateway, db_engine: Engine
) -> None:
    sim.configure({"models": {**SIM_MODELS, "solo": {"errors": {429: 1.0}, "retry_after_s": 0}}})
    good, limited = items(4, prefix="good"), items(3, "solo", prefix="limited")
    batch = [*good, *limited]

    first = await run_items(gateway, batch, concurrency=3)

    failed = [o for o in first if o.status == "failed"]
    assert [o.item_id for o in failed] == [i.item_id for i in limited]
    assert all(o.error_class == "rate_limit" and o.retryable for o in failed)
    assert all(o.request_id is None and o.cost_usd == 0 and o.error for o in failed)
    summary = batch_summary(db_engine, [i.item_id for i in batch])
    assert Decimal(summary.pop("cost_usd")) == sum((o.cost_usd for o in first), Decimal(0))
    assert summary == {
        "items": 7,
        "items_ok": 4,
        "items_failed": 3,
        "calls": 7,
        "failed_calls": 3,
        "attempts": 7,
        "fallbacks": 0,
    }

    sim.configure({"models": SIM_MODELS})  # the rate limit is over
    second = await run_items(gateway, batch, concurrency=3)

    assert all(o.status == "ok" for o in second)
    assert [o.reused for o in second] == [True] * 4 + [False] * 3
    by_model = sim.stats()["models"]
    assert by_model["gpt-4o-mini"]["by_status"] == {"200": 4}  # not paid again
    assert by_model["solo"]["by_status"] == {"200": 3, "429": 3}
    summary = batch_summary(db_engine, [i.item_id for i in batch])
    assert (summary["items_ok"], summary["items_failed"]) == (7, 0)
    assert (summary["calls"], summary["failed_calls"]) == (10, 3)
    total = sum((o.cost_usd for o in second), Decimal(0))
    assert Decimal(summary["cost_usd"]) == total
    assert total == sum((r.cost_usd for r in log_rows(db_engine)), Decimal(0))
    assert total > 0


async def test_invalid_item_fails_alone(sim: SimServer, gateway: Gateway) -> None:
    batch = [*items(2), *items(1, "no-such-group", prefix="bad")]
    outcomes = await run_items(gateway, batch, concurrency=2)
    assert [o.status for o in outcomes] == ["ok", "ok", "failed"]
    bad = outcomes[2]
    assert (bad.error_class, bad.retryable) == ("validation", False)
    assert "no-such-group" in (bad.error or "")
    assert provider_calls(sim) == 2


async def test_unpriceable_item_is_reported_as_a_pricing_failure(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    # Before gpt-4o-mini's first price: the call cannot be priced.
    gateway = make_gateway(
        gateway_config(sim.base_url), clock=lambda: datetime(2024, 1, 1, tzinfo=UTC)
    )
    outcomes = await run_items(gateway, [*items(1), *items(1, "open", prefix="free")], 2)
    unpriced, free = outcomes
    assert (free.status, free.cost_usd) == ("ok", Decimal(0))
    assert unpriced.status == "failed"
    assert unpriced.retryable is False
    assert unpriced.error_class == "pricing"  # what the request_log row says, not "validation"
    (row,) = [r for r in log_rows(db_engine) if r.action_id == unpriced.item_id]
    assert row.error_class == unpriced.error_class


async def test_same_item_id_from_another_tenant_is_not_reused(
    sim: SimServer, gateway: Gateway, db_engine: Engine
) -> None:
    # Action ids come from callers; two tenants can both send "ticket-000". One tenant's
    # answer must never be handed to another, and the second tenant's call must be made.
    (acme,) = await run_items(gateway, items(1, prefix="ticket", tenant="acme"), 1)
    (globex,) = await run_items(gateway, items(1, prefix="ticket", tenant="globex"), 1)
    assert acme.item_id == globex.item_id
    assert globex.reused is False
    assert globex.request_id != acme.request_id
    assert provider_calls(sim) == 2
    assert sorted(r.tenant_id for r in log_rows(db_engine)) == ["acme", "globex"]


def test_outcomes_are_json_serializable() -> None:
    # Prefect persists chunk results: outcomes must survive a JSON round trip exactly.
    outcome = ItemOutcome(item_id="a", status="ok", cost_usd=Decimal("0.000012345678"))
    assert ItemOutcome.model_validate_json(outcome.model_dump_json()) == outcome


async def test_batch_summary_of_unknown_items_counts_them_failed(db_engine: Engine) -> None:
    summary = await asyncio.to_thread(batch_summary, db_engine, ["never-ran-1", "never-ran-2"])
    assert summary["items"] == 2
    assert (summary["items_ok"], summary["items_failed"], summary["calls"]) == (0, 2, 0)
    assert Decimal(summary["cost_usd"]) == 0
