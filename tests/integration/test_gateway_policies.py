"""Per-feature policies of the gateway: response cache, stale-if-error, static answers,
and the soft-cap downgrade to a cheaper model group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select

from llmops.db.models import RequestLog
from llmops.errors import BudgetExceeded, RetryableError
from llmops.gateway.budget import BudgetManager
from llmops.gateway.cache import CachedAnswer, RedisCache
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import ChatRequest, Gateway
from llmops.sim import SimConfig, SimServer

ZERO_LATENCY = {"ttft_ms": 0, "tokens_per_s": 0, "echo": True}


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig.model_validate({"seed": 3, "default": ZERO_LATENCY})) as server:
        yield server


def _config(sim: SimServer, features: dict[str, Any]) -> GatewayConfig:
    def dep(dep_id: str, model: str) -> dict[str, Any]:
        return {"id": dep_id, "model": f"openai/{model}", "api_base": sim.base_url, "api_key": "k"}

    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 5, "num_retries": 0},
            "model_groups": {
                "smart": {"deployments": [dep("d-smart", "gpt-4o")]},
                "cheap": {"deployments": [dep("d-cheap", "gpt-4o-mini")]},
            },
            "prices": [
                {"model": "openai/gpt-4o", "input_per_mtok": "2.50", "output_per_mtok": "10"},
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"},
            ],
            "features": features,
        }
    )


def _req(feature: str, text: str = "Summarize ticket 42 for dana@example.com") -> ChatRequest:
    return ChatRequest(
        tenant_id="acme",
        feature_id=feature,
        messages=[{"role": "user", "content": text}],
        model_group="smart",
        max_tokens=64,
    )


def _rows(engine: Engine) -> list[RequestLog]:
    with engine.connect() as conn:
        return [RequestLog(**r._mapping) for r in conn.execute(select(RequestLog.__table__))]  # type: ignore[attr-defined]


async def test_cache_hit_makes_no_call_costs_nothing_and_is_per_tenant(
    sim: SimServer, make_gateway: Any, db_engine: Engine
) -> None:
    gw = make_gateway(_config(sim, {"summary": {"cache": {"enabled": True, "ttl_s": 60}}}))
    first = await gw.chat(_req("summary"))
    second = await gw.chat(_req("summary"))
    assert sim.stats()["total"] == 1
    assert second.cache_hit and not first.cache_hit
    assert second.text == first.text and "dana@example.com" in second.text
    assert second.cost_usd == 0 and first.cost_usd > 0
    other = _req("summary")
    other.tenant_id = "globex"
    await gw.chat(other)
    assert sim.stats()["total"] == 2  # another tenant never gets acme's answer
    await gw.flush()
    rows = sorted(_rows(db_engine), key=lambda r: r.id or 0)
    assert [r.cache_hit for r in rows] == [False, True, False]
    assert rows[1].cost_usd == Decimal(0) and rows[1].status == "ok"
    assert "dana@example.com" not in (rows[1].response_text or "") + (rows[1].request_text or "")


async def test_uncached_feature_always_calls(sim: SimServer, make_gateway: Any) -> None:
    gw = make_gateway(_config(sim, {}))
    await gw.chat(_req("summary"))
    await gw.chat(_req("summary"))
    assert sim.stats()["total"] == 2


async def test_stale_if_error_serves_last_good_answer_with_its_age(
    sim: SimServer, make_gateway: Any, db_engine: Engine
) -> None:
    gw = make_gateway(_config(sim, {"summary": {"degrade": {"on_failure": "stale"}}}))
    good = await gw.chat(_req("summary"))
    sim.configure({"seed": 3, "default": {**ZERO_LATENCY, "errors": {"503": 1.0}}})
    stale = await gw.chat(_req("summary"))
    assert stale.degraded == "stale" and stale.text == good.text
    assert stale.stale_age_s is not None and stale.stale_age_s >= 0
    with pytest.raises(RetryableError):  # nothing stored for a different request
        await gw.chat(_req("summary", "another ticket"))
    await gw.flush()
    degraded = [r for r in _rows(db_engine) if r.status == "degraded"]
    assert len(degraded) == 1
    assert degraded[0].degraded == "stale" and degraded[0].error_class == "server_error"
    assert degraded[0].cost_usd == 0


async def test_static_answer_when_a_hard_cap_is_reached(
    sim: SimServer, make_gateway: Any, db_engine: Engine
) -> None:
    BudgetManager(db_engine).set_cap(
        tenant_id="acme", feature_id=None, limit_usd=Decimal("0.0001"), period="day"
    )
    static = {"degrade": {"on_failure": "static", "static_response": "We'll get back to you."}}
    gw = make_gateway(_config(sim, {"summary": static}))
    result = await gw.chat(_req("summary"))
    assert result.degraded == "static" and result.text == "We'll get back to you."
    assert sim.stats()["total"] == 0
    gw_plain = make_gateway(_config(sim, {}))
    with pytest.raises(BudgetExceeded):
        await gw_plain.chat(_req("summary"))
    await gw.flush()
    await gw_plain.flush()
    classes = sorted((r.status, r.error_class) for r in _rows(db_engine))
    assert classes == [("degraded", "budget_exceeded"), ("error", "budget_exceeded")]


async def test_soft_cap_past_threshold_routes_to_the_cheaper_group(
    sim: SimServer, make_gateway: Any, db_engine: Engine
) -> None:
    budgets = BudgetManager(db_engine, cap_cache_ttl=0)
    budgets.set_cap(
        tenant_id="acme", feature_id=None, limit_usd=Decimal("0.0005"), period="day", mode="soft"
    )
    policy = {"degrade": {"soft_cap_model_group": "cheap", "soft_cap_threshold_pct": 50}}
    gw = Gateway(_config(sim, {"summary": policy}), db_engine, budgets=budgets)
    try:
        groups = []
        for _ in range(6):
            result = await gw.chat(_req("summary"))
            groups.append((result.model_group, result.degraded))
    finally:
        await gw.aclose()
    assert groups[0] == ("smart", None)
    assert ("cheap", "downgraded") in groups
    first_cheap = groups.index(("cheap", "downgraded"))
    assert all(g == ("cheap", "downgraded") for g in groups[first_cheap:])
    spent_smart = sum(
        r.cost_usd for r in _rows(db_engine) if r.model_group == "smart" and r.status == "ok"
    )
    assert spent_smart * 100 / Decimal("0.0005") >= 50  # it moved only past the threshold


async def test_abandoned_stream_is_charged_for_what_was_streamed(
    make_gateway: Any, db_engine: Engine
) -> None:
    slow = {"ttft_ms": 0, "tokens_per_s": 200, "min_output_tokens": 60, "max_output_tokens": 60}
    with SimServer(SimConfig.model_validate({"seed": 3, "default": slow})) as server:
        budgets = BudgetManager(db_engine, cap_cache_ttl=0)
        budgets.set_cap(tenant_id="acme", feature_id=None, limit_usd=Decimal("5"), period="day")
        gw = make_gateway(_config(server, {}), budgets=budgets)
        stream = gw.stream(_req("summary"))
        seen = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen += 1
            if seen == 3:
                break
        await stream.aclose()
        await gw.flush()
        assert gw.leases.held_usd() == 0  # the stream's hold was settled
        await gw.aclose()  # returns the process's lease of the cap's headroom
    (row,) = _rows(db_engine)
    assert row.status == "cancelled"
    assert 0 < row.output_tokens < 60
    assert row.cost_usd > 0 and row.deployment_id == "d-smart"
    (cap,) = budgets.list_caps()
    assert cap.spent_usd == row.cost_usd  # charged what was streamed, not released
    assert cap.reserved_usd == 0


async def test_redis_cache_is_shared_by_gateways_and_expires(
    sim: SimServer, make_gateway: Any, redis_url: str, redis_prefix: str
) -> None:
    config = _config(sim, {"summary": {"cache": {"enabled": True, "ttl_s": 60}}})
    first = make_gateway(config, cache=RedisCache(redis_url, prefix=redis_prefix))
    second = make_gateway(config, cache=RedisCache(redis_url, prefix=redis_prefix))
    answer = await first.chat(_req("summary"))
    hit = await second.chat(_req("summary"))  # another process would see the same
    assert hit.cache_hit and hit.text == answer.text
    assert sim.stats()["total"] == 1
    stored = CachedAnswer("t", "stop", "m", "d", 1, 2, time.time())
    cache = RedisCache(redis_url, prefix=redis_prefix)
    await cache.set("short", stored, retain_s=1)
    assert await cache.get("short") == stored
    await asyncio.sleep(2.1)
    assert await cache.get("short") is None
    await cache.aclose()


async def _collect(gw: Gateway, req: ChatRequest) -> tuple[str, list[Any]]:
    chunks = [chunk async for chunk in gw.stream(req)]
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    return text, chunks


async def test_a_stream_is_answered_from_the_cache_and_fills_it(
    sim: SimServer, make_gateway: Any, db_engine: Engine
) -> None:
    gw = make_gateway(_config(sim, {"summary": {"cache": {"enabled": True, "ttl_s": 60}}}))
    streamed, _ = await _collect(gw, _req("summary"))  # a streamed answer fills the cache
    replayed, chunks = await _collect(gw, _req("summary"))
    assert sim.stats()["total"] == 1
    assert replayed == streamed and "dana@example.com" in replayed  # restored for the caller
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens > 0  # the usage chunk, as providers send it
    assert all(c._hidden_params["llmops_cache_hit"] for c in chunks)
    chat = await gw.chat(_req("summary"))  # the same entry serves chat callers too
    assert chat.cache_hit and chat.text == streamed
    await gw.flush()
    rows = sorted(_rows(db_engine), key=lambda r: r.id or 0)
    assert [(r.stream, r.cache_hit) for r in rows] == [(True, False), (True, True), (False, True)]
    assert rows[1].cost_usd == 0 and rows[1].status == "ok"


async def test_a_failed_stream_degrades_to_the_stale_or_static_answer(
    sim: SimServer, make_gateway: Any, db_engine: Engine
) -> None:
    features = {
        "summary": {"degrade": {"on_failure": "stale"}},
        "faq": {"degrade": {"on_failure": "static", "static_response": "Try again soon."}},
    }
    gw = make_gateway(_config(sim, features))
    good, _ = await _collect(gw, _req("summary"))
    sim.configure({"seed": 3, "default": {**ZERO_LATENCY, "errors": {"503": 1.0}}})

    stale, chunks = await _collect(gw, _req("summary"))
    assert stale == good
    assert chunks[0]._hidden_params["llmops_degraded"] == "stale"
    assert chunks[0]._hidden_params["llmops_stale_age_s"] >= 0
    static, chunks = await _collect(gw, _req("faq"))
    assert static == "Try again soon."
    assert chunks[0]._hidden_params["llmops_degraded"] == "static"
    with pytest.raises(RetryableError):  # nothing stored for another request: the error
        await _collect(gw, _req("summary", "another ticket"))

    await gw.flush()
    rows = _rows(db_engine)
    degraded = sorted((r.feature_id, r.degraded) for r in rows if r.status == "degraded")
    assert degraded == [("faq", "static"), ("summary", "stale")]
    assert gw.leases.held_usd() == 0
