"""The gateway core over the provider simulator: one complete request_log row per call."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.models import RequestLog
from llmops.errors import (
    PermanentError,
    PricingError,
    RetryableError,
    ValidationError,
    is_retryable,
)
from llmops.gateway.config import GatewayConfig, load_gateway_config
from llmops.gateway.core import ChatRequest, Gateway
from llmops.gateway.pricebook import Usage
from llmops.gateway.requestlog import RequestLogWriter
from llmops.gateway.router import build_router
from llmops.sim import SimConfig, SimServer

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You summarize support tickets."},
    {"role": "user", "content": "My invoice shows the wrong VAT number. Can you reissue it?"},
]
#: The simulator's models. gpt-4o-mini reports cached and reasoning tokens so that every
#: rate of its price is exercised; it takes 20 ms so latency is measurably above zero.
SIM_MODELS: dict[str, Any] = {
    "gpt-4o-mini": {"cached_tokens_ratio": 0.5, "reasoning_tokens": 2, "ttft_ms": 20},
    "gpt-4o": {},
    "solo": {},
    "llama": {},
}


def gateway_config(base_url: str, *, num_retries: int = 0, **groups: Any) -> GatewayConfig:
    """Groups: fast -> backup (fallback), solo (no fallback), open (free)."""

    def dep(dep_id: str, model: str) -> dict[str, Any]:
        return {"id": dep_id, "model": model, "api_base": base_url, "api_key": "sk-sim"}

    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 10, "num_retries": num_retries},
            "model_groups": {
                "fast": {
                    "deployments": [dep("sim-mini", "openai/gpt-4o-mini")],
                    "fallbacks": ["backup"],
                },
                "backup": {"deployments": [dep("sim-4o", "openai/gpt-4o")]},
                "solo": {"deployments": [dep("sim-solo", "openai/solo")]},
                "open": {"deployments": [dep("sim-llama", "openai/llama")]},
                **groups,
            },
            "prices": [
                {
                    "model": "openai/gpt-4o-mini",
                    "effective_from": "2024-07-18",
                    "input_per_mtok": "0.15",
                    "output_per_mtok": "0.60",
                    "cached_input_per_mtok": "0.075",
                    "reasoning_per_mtok": "1.20",
                },
                {"model": "openai/gpt-4o", "input_per_mtok": "2.50", "output_per_mtok": "10"},
                {"model": "openai/solo", "input_per_mtok": "1", "output_per_mtok": "2"},
                {"model": "openai/llama", "free": True},
            ],
        }
    )


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig.model_validate({"seed": 3, "models": SIM_MODELS})) as server:
        yield server


@pytest.fixture
def gateway(sim: SimServer, make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway(gateway_config(sim.base_url))


def request(model_group: str = "fast", **extra: Any) -> ChatRequest:
    return ChatRequest(
        tenant_id="acme",
        feature_id="ticket-summary",
        messages=MESSAGES,
        model_group=model_group,
        **extra,
    )


def log_rows(engine: Engine) -> list[RequestLog]:
    with Session(engine) as session:
        return list(session.exec(select(RequestLog).order_by(col(RequestLog.id))).all())


async def direct_answer(sim: SimServer, model: str, **extra: Any) -> dict[str, Any]:
    """What the simulator itself answers (it is deterministic in model and messages)."""
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        response = await client.post(
            "/chat/completions", json={"model": model, "messages": MESSAGES, **extra}
        )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def usage_of(body: dict[str, Any]) -> Usage:
    usage = body["usage"]
    return Usage(
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage["completion_tokens"],
        cached_tokens=usage["prompt_tokens_details"]["cached_tokens"],
        reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"],
    )


def requests_to(sim: SimServer, model: str) -> dict[str, int]:
    by_status: dict[str, int] = sim.stats()["models"].get(model, {}).get("by_status", {})
    return by_status


# -- success ----------------------------------------------------------------------------


async def test_chat_writes_one_complete_row(
    sim: SimServer, gateway: Gateway, db_engine: Engine
) -> None:
    result = await gateway.chat(
        request(action_id="act-1", job_id="job_1", prompt_name="summarize", prompt_version=3)
    )

    (row,) = log_rows(db_engine)
    assert requests_to(sim, "gpt-4o-mini") == {"200": 1}
    expected = await direct_answer(sim, "gpt-4o-mini")
    usage = usage_of(expected)
    assert usage.cached_tokens > 0 and usage.reasoning_tokens > 0  # every rate is exercised
    cost, version = gateway.prices.cost("openai/gpt-4o-mini", usage, row.started_at)

    assert row.request_id == result.request_id
    assert re.fullmatch(r"req_[0-9a-z]{26}", row.request_id)
    assert (row.tenant_id, row.feature_id) == ("acme", "ticket-summary")
    assert (row.action_id, row.job_id) == ("act-1", "job_1")
    assert (row.prompt_name, row.prompt_version) == ("summarize", 3)
    assert row.model_group == "fast"
    assert (row.deployment_id, row.provider, row.model) == (
        "sim-mini",
        "openai",
        "openai/gpt-4o-mini",
    )
    assert (row.attempts, row.fallbacks_used) == (1, 0)
    assert (row.status, row.error_class, row.error_message) == ("ok", None, None)
    assert (row.stream, row.cache_hit) == (False, False)
    assert row.input_tokens == usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert row.output_tokens == usage.output_tokens
    assert row.cached_tokens == usage.cached_tokens
    assert row.reasoning_tokens == usage.reasoning_tokens
    assert cost > 0
    assert row.cost_usd == cost
    assert isinstance(row.cost_usd, Decimal)
    assert row.price_version == version == "openai/gpt-4o-mini@2024-07-18"
    assert row.latency_ms >= 20  # the simulator took 20 ms before answering
    assert row.ttft_ms is None
    assert json.loads(row.request_text or "") == MESSAGES
    assert row.response_text == expected["choices"][0]["message"]["content"]
    assert re.fullmatch(r"[0-9a-f]{32}", row.trace_id or "")
    assert row.started_at.tzinfo is not None
    assert row.started_at <= row.ended_at <= row.logged_at

    # The caller gets the same accounting the log holds.
    assert result.text == row.response_text
    assert (result.cost_usd, result.price_version) == (row.cost_usd, row.price_version)
    assert result.usage == usage
    assert (result.deployment_id, result.model) == ("sim-mini", "openai/gpt-4o-mini")
    assert result.finish_reason == "stop"
    assert result.latency_ms == row.latency_ms


async def test_every_call_gets_its_own_row_and_trace(gateway: Gateway, db_engine: Engine) -> None:
    results = await asyncio.gather(*(gateway.chat(request(action_id=f"a{i}")) for i in range(5)))
    rows = log_rows(db_engine)
    assert len(rows) == 5
    assert {r.request_id for r in rows} == {r.request_id for r in results}
    assert len({r.trace_id for r in rows}) == 5
    assert {r.action_id for r in rows} == {f"a{i}" for i in range(5)}
    assert all(r.status == "ok" for r in rows)


async def test_max_tokens_is_forwarded(sim: SimServer, gateway: Gateway, db_engine: Engine) -> None:
    result = await gateway.chat(request(max_tokens=5, temperature=0))
    (row,) = log_rows(db_engine)
    assert result.finish_reason == "length"
    assert row.output_tokens == 5  # 2 reasoning + 3 visible
    assert row.reasoning_tokens == 2
    expected = await direct_answer(sim, "gpt-4o-mini", max_tokens=5)
    assert row.response_text == expected["choices"][0]["message"]["content"]


async def test_free_model_costs_zero_with_its_price_version(
    gateway: Gateway, db_engine: Engine
) -> None:
    result = await gateway.chat(request("open"))
    (row,) = log_rows(db_engine)
    assert row.status == "ok"
    assert row.input_tokens > 0 and row.output_tokens > 0
    assert row.cost_usd == result.cost_usd == Decimal(0)
    assert row.price_version == "openai/llama@2000-01-01"


async def test_text_is_not_logged_when_disabled(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    gateway = make_gateway(gateway_config(sim.base_url), log_text=False)
    result = await gateway.chat(request())
    (row,) = log_rows(db_engine)
    assert result.text  # the caller still gets the answer
    assert (row.request_text, row.response_text) == (None, None)
    assert row.status == "ok" and row.output_tokens > 0 and row.cost_usd > 0


async def test_stream_writes_row_with_ttft_and_final_usage(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    mini = {**SIM_MODELS["gpt-4o-mini"], "ttft_ms": 30, "tokens_per_s": 2000}
    sim.configure({"models": {**SIM_MODELS, "gpt-4o-mini": mini}})
    gateway = make_gateway(gateway_config(sim.base_url))
    parts: list[str] = []
    usages: list[Any] = []
    async for chunk in gateway.stream(request(action_id="s-1")):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if getattr(chunk, "usage", None) is not None:
            usages.append(chunk.usage)

    (row,) = log_rows(db_engine)
    expected = await direct_answer(sim, "gpt-4o-mini")
    usage = usage_of(expected)
    assert "".join(parts) == expected["choices"][0]["message"]["content"]
    assert usages and usages[-1].prompt_tokens == usage.input_tokens
    assert row.stream is True
    assert row.status == "ok"
    assert row.action_id == "s-1"
    assert row.deployment_id == "sim-mini"
    assert row.response_text == "".join(parts)
    assert row.ttft_ms is not None
    assert 30 <= row.ttft_ms <= row.latency_ms
    assert (row.input_tokens, row.output_tokens) == (usage.input_tokens, usage.output_tokens)
    assert (row.cached_tokens, row.reasoning_tokens) == (
        usage.cached_tokens,
        usage.reasoning_tokens,
    )
    cost, version = gateway.prices.cost("openai/gpt-4o-mini", usage, row.started_at)
    assert (row.cost_usd, row.price_version) == (cost, version)
    assert cost > 0


async def test_stream_abandoned_by_the_caller_still_writes_one_row(
    gateway: Gateway, db_engine: Engine
) -> None:
    async with aclosing(gateway.stream(request())) as stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    (row,) = log_rows(db_engine)
    assert row.stream is True
    assert (row.status, row.error_class) == ("cancelled", "cancelled")


async def test_call_cancelled_by_the_caller_still_writes_one_row(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure({"models": {**SIM_MODELS, "solo": {"hang_rate": 1.0}}})
    gateway = make_gateway(gateway_config(sim.base_url))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gateway.chat(request("solo")), timeout=0.5)
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class) == ("cancelled", "cancelled")
    assert row.cost_usd == 0


# -- failover, retries, timeouts ------------------------------------------------------------


async def test_failing_group_falls_back_to_another_group(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure(
        {"models": {**SIM_MODELS, "gpt-4o-mini": {"fail_first": {"n": 1000, "status": 503}}}}
    )
    gateway = make_gateway(gateway_config(sim.base_url))
    result = await gateway.chat(request())
    chunks = [chunk async for chunk in gateway.stream(request())]

    assert chunks
    rows = log_rows(db_engine)
    assert [r.stream for r in rows] == [False, True]
    for row in rows:
        assert row.status == "ok"
        assert (row.deployment_id, row.model) == ("sim-4o", "openai/gpt-4o")
        assert row.model_group == "fast"  # what the caller asked for; deployment_id served
        assert row.fallbacks_used >= 1
        assert row.attempts == 2  # the failed primary, then the fallback
        usage = Usage(row.input_tokens, row.output_tokens, row.cached_tokens, row.reasoning_tokens)
        assert row.output_tokens > 0
        # Priced as the model that answered, not the one that was asked for.
        assert (row.cost_usd, row.price_version) == gateway.prices.cost(
            "openai/gpt-4o", usage, row.started_at
        )
    assert result.deployment_id == "sim-4o"
    # num_retries 0: one failed attempt on the primary per call, then the fallback.
    assert requests_to(sim, "gpt-4o-mini") == {"503": 2}
    assert requests_to(sim, "gpt-4o") == {"200": 2}


async def test_hanging_deployment_times_out_and_falls_back(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure({"models": {**SIM_MODELS, "solo": {"hang_rate": 1.0}}})
    slow_group = {
        "deployments": [
            {"id": "sim-slow", "model": "openai/solo", "api_base": sim.base_url, "api_key": "sk"}
        ],
        "timeout_s": 0.3,
        "fallbacks": ["open"],
    }
    gateway = make_gateway(gateway_config(sim.base_url, slow=slow_group))
    result = await gateway.chat(request("slow"))
    (row,) = log_rows(db_engine)
    assert row.status == "ok"
    assert row.deployment_id == result.deployment_id == "sim-llama"
    assert row.fallbacks_used >= 1
    assert row.latency_ms >= 300
    assert requests_to(sim, "solo") == {"hang": 1}


async def test_hanging_deployment_without_fallback_is_a_retryable_timeout(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure({"models": {**SIM_MODELS, "solo": {"hang_rate": 1.0}}})
    slow_group = {
        "deployments": [
            {"id": "sim-slow", "model": "openai/solo", "api_base": sim.base_url, "api_key": "sk"}
        ],
        "timeout_s": 0.3,
    }
    gateway = make_gateway(gateway_config(sim.base_url, slow=slow_group))
    with pytest.raises(RetryableError) as info:
        await gateway.chat(request("slow"))
    assert info.value.error_class == "timeout"
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class) == ("error", "timeout")


async def test_retries_on_the_same_group_are_counted(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure({"models": {**SIM_MODELS, "solo": {"fail_first": {"n": 1, "status": 503}}}})
    gateway = make_gateway(gateway_config(sim.base_url, num_retries=1))
    result = await gateway.chat(request("solo"))
    (row,) = log_rows(db_engine)
    assert requests_to(sim, "solo") == {"200": 1, "503": 1}
    assert (row.status, row.deployment_id) == ("ok", "sim-solo")
    assert row.attempts == result.attempts == 2
    assert row.fallbacks_used == 0


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sim_change", "error_class", "http_status"),
    [
        ({"models": {**SIM_MODELS, "solo": {"errors": {400: 1.0}}}}, "bad_request", 400),
        ({"strict_models": True, "models": {"gpt-4o": {}}}, "not_found", 404),
        ({"api_key": "sk-other", "models": SIM_MODELS}, "auth", 401),
    ],
    ids=["400", "404-unknown-model", "401-wrong-key"],
)
async def test_permanent_provider_error_is_not_retried_and_logged(
    sim: SimServer,
    db_engine: Engine,
    make_gateway: Callable[..., Gateway],
    sim_change: dict[str, Any],
    error_class: str,
    http_status: int,
) -> None:
    sim.configure(sim_change)
    # Retries are allowed, but a permanent error must not use them.
    gateway = make_gateway(gateway_config(sim.base_url, num_retries=2))
    with pytest.raises(PermanentError) as info:
        await gateway.chat(request("solo", action_id="perm"))
    error = info.value
    assert error.error_class == error_class
    assert not is_retryable(error)
    assert sim.stats()["total"] == 1

    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class, row.http_status) == ("error", error_class, http_status)
    assert row.action_id == "perm"
    assert row.model_group == "solo"
    assert row.error_message
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (0, 0, Decimal(0))
    assert row.price_version is None
    assert row.response_text is None
    assert json.loads(row.request_text or "") == MESSAGES


async def test_rate_limit_without_fallback_is_retryable(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure({"models": {**SIM_MODELS, "solo": {"errors": {429: 1.0}, "retry_after_s": 0}}})
    gateway = make_gateway(gateway_config(sim.base_url))
    with pytest.raises(RetryableError) as info:
        await gateway.chat(request("solo"))
    assert info.value.error_class == "rate_limit"
    assert is_retryable(info.value)
    # num_retries 0 means one request: the OpenAI SDK's own retries are off too.
    assert requests_to(sim, "solo") == {"429": 1}
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class, row.http_status) == ("error", "rate_limit", 429)
    assert row.attempts == 1
    assert row.cost_usd == 0


async def test_unknown_model_group_is_rejected_with_a_row(
    sim: SimServer, gateway: Gateway, db_engine: Engine
) -> None:
    with pytest.raises(ValidationError, match="unknown model group 'fastest'"):
        await gateway.chat(request("fastest", action_id="bad-1"))
    with pytest.raises(ValidationError):
        async for _ in gateway.stream(request("fastest", action_id="bad-2")):
            pass
    rows = log_rows(db_engine)
    assert [(r.status, r.error_class, r.action_id) for r in rows] == [
        ("rejected", "validation", "bad-1"),
        ("rejected", "validation", "bad-2"),
    ]
    assert all(r.model_group == "fastest" for r in rows)
    assert all(r.cost_usd == 0 and r.deployment_id is None for r in rows)
    assert sim.stats()["total"] == 0  # nothing reached a provider


@pytest.mark.parametrize("field", ["model_group", "feature_id", "tenant_id"])
async def test_overlong_identifiers_are_rejected_with_a_row(
    sim: SimServer, gateway: Gateway, db_engine: Engine, field: str
) -> None:
    # These arrive from HTTP callers (model, X-LLMOps-Feature, tenant); a value longer
    # than its column must be a ValidationError with a logged row on every backend,
    # not a database error after the provider was paid.
    req = request()
    setattr(req, field, "x" * 300)
    with pytest.raises(ValidationError):
        await gateway.chat(req)
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class) == ("rejected", "validation")
    assert sim.stats()["total"] == 0


@pytest.mark.parametrize(
    "change",
    [{"messages": []}, {"max_tokens": 0}, {"tenant_id": ""}],
    ids=["no-messages", "zero-max-tokens", "no-tenant"],
)
async def test_invalid_requests_are_rejected_before_the_provider(
    sim: SimServer, gateway: Gateway, db_engine: Engine, change: dict[str, Any]
) -> None:
    req = request()
    for key, value in change.items():
        setattr(req, key, value)
    with pytest.raises(ValidationError):
        await gateway.chat(req)
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class) == ("rejected", "validation")
    assert sim.stats()["total"] == 0


async def test_call_before_its_first_price_is_refused_before_the_provider(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    # No price in force: never call the provider (its answer could not be billed).
    before_price = datetime(2024, 7, 17, 12, 0, tzinfo=UTC)
    gateway = make_gateway(gateway_config(sim.base_url), clock=lambda: before_price)
    with pytest.raises(PricingError):
        await gateway.chat(request(action_id="early"))
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class) == ("rejected", "pricing")
    assert row.started_at == before_price
    assert (row.cost_usd, row.price_version) == (Decimal(0), None)
    assert sim.stats()["total"] == 0


async def test_answer_that_cannot_be_priced_is_logged_unpriced_with_its_tokens(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    # The provider answered (and will bill us), but from a deployment the price book does
    # not know: the row keeps the tokens and is flagged, never recorded as a free call.
    config = gateway_config(sim.base_url)

    class MislabellingRouter:
        def __init__(self) -> None:
            self.inner = build_router(config)

        async def acompletion(self, **kwargs: Any) -> Any:
            response = await self.inner.acompletion(**kwargs)
            response._hidden_params["model_id"] = "mystery-deployment"
            return response

    gateway = make_gateway(config, router=MislabellingRouter())
    with pytest.raises(PricingError, match="mystery-deployment"):
        await gateway.chat(request(action_id="unpriced"))
    (row,) = log_rows(db_engine)
    expected = usage_of(await direct_answer(sim, "gpt-4o-mini"))
    assert (row.status, row.error_class) == ("unpriced", "pricing")
    assert row.deployment_id == "mystery-deployment"
    assert (row.input_tokens, row.output_tokens) == (expected.input_tokens, expected.output_tokens)
    assert (row.cost_usd, row.price_version) == (Decimal(0), None)


async def test_one_unwritable_row_does_not_fail_the_calls_logged_with_it(
    db_engine: Engine,
) -> None:
    # Rows of concurrent calls share one commit (group commit). A row the database refuses
    # must fail only its own write: the other callers' rows are committed and they get no
    # error for someone else's row.
    writer = RequestLogWriter(db_engine)
    now = datetime.now(UTC)

    def row(i: int, **extra: Any) -> dict[str, Any]:
        values = {
            "request_id": f"req_group{i}",
            "started_at": now,
            "ended_at": now,
            "logged_at": now,
            "tenant_id": "acme",
            "feature_id": "ticket-summary",
            "model_group": "fast",
            "status": "ok",
            **extra,
        }
        return RequestLog.model_validate(values).model_dump(exclude={"id"})

    good = [row(i) for i in range(3)]
    bad = {**row(3), "tenant_id": None}  # NOT NULL on every backend
    try:
        results = await asyncio.gather(
            *(writer.write(r) for r in [good[0], bad, *good[1:]]), return_exceptions=True
        )
    finally:
        await writer.aclose()
    assert isinstance(results[1], Exception)
    assert [results[0], *results[2:]] == [None, None, None]
    assert sorted(r.request_id for r in log_rows(db_engine)) == sorted(
        r["request_id"] for r in good
    )


# -- the shipped config -------------------------------------------------------------------


async def test_shipped_gateway_config_serves_every_group(
    db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    with SimServer() as sim:
        config = load_gateway_config(
            REPO / "config" / "gateway.yaml", env={"LLMOPS_SIM_URL": sim.base_url}
        )
        gateway = make_gateway(config)
        for group in ("fast", "smart", "open"):
            await gateway.chat(request(group))
    rows = log_rows(db_engine)
    assert [r.model_group for r in rows] == ["fast", "smart", "open"]
    book = config.price_book()
    for row in rows:
        assert row.status == "ok"
        dep = config.deployment(row.deployment_id or "")
        assert dep is not None and dep.model == row.model
        usage = Usage(row.input_tokens, row.output_tokens, row.cached_tokens, row.reasoning_tokens)
        assert (row.cost_usd, row.price_version) == book.cost(
            dep.price_model, usage, row.started_at
        )
    assert rows[0].cost_usd > 0
    assert rows[2].cost_usd == 0 and rows[2].price_version == "openai/llama-3.1-8b@2000-01-01"


async def test_every_call_is_a_span_linked_from_its_request_log_row(
    db_engine: Engine, make_gateway: Any, sim: Any, span_exporter: Any
) -> None:
    """A gateway call is an OpenTelemetry span with the GenAI attributes; the request-log
    row stores its trace id, so a trace leads to the row and back."""
    from sqlmodel import Session, select

    from llmops.db.models import RequestLog
    from llmops.gateway.core import ChatRequest

    gateway = make_gateway(_traced_config(sim.base_url))
    result = await gateway.chat(
        ChatRequest(
            tenant_id="acme",
            feature_id="triage",
            messages=[{"role": "user", "content": "hello"}],
            model_group="fast",
            max_tokens=32,
        )
    )
    chunks = [
        c
        async for c in gateway.stream(
            ChatRequest(
                tenant_id="acme",
                feature_id="triage",
                messages=[{"role": "user", "content": "stream please"}],
                model_group="fast",
            )
        )
    ]
    assert chunks
    await gateway.flush()
    spans = [s for s in span_exporter.get_finished_spans() if s.name == "chat fast"]
    assert len(spans) == 2
    attrs = dict(spans[0].attributes or {})
    assert attrs["gen_ai.system"] == "openai" and attrs["gen_ai.request.model"] == "fast"
    assert attrs["gen_ai.usage.input_tokens"] == result.usage.input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == result.usage.output_tokens > 0
    assert attrs["llmops.cost_usd"] == str(result.cost_usd)
    assert attrs["llmops.request_id"] == result.request_id
    assert dict(spans[1].attributes or {})["llmops.stream"] is True
    with Session(db_engine) as session:
        rows = {r.request_id: r for r in session.exec(select(RequestLog))}
    assert rows[result.request_id].trace_id == f"{spans[0].context.trace_id:032x}"
    streamed = dict(spans[1].attributes or {})["llmops.request_id"]
    assert rows[str(streamed)].trace_id == f"{spans[1].context.trace_id:032x}"


def _traced_config(base_url: str) -> Any:
    from llmops.gateway.config import GatewayConfig

    return GatewayConfig.model_validate(
        {
            "model_groups": {
                "fast": {
                    "deployments": [
                        {
                            "id": "d-mini",
                            "model": "openai/gpt-4o-mini",
                            "api_base": base_url,
                            "api_key": "sk-test",
                        }
                    ]
                }
            },
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}
            ],
        }
    )


def test_the_python_api_builds_a_gateway_without_fetching_litellm_s_cost_map() -> None:
    """Building a gateway from plain Python (no CLI, no flow) uses LiteLLM's bundled cost
    map: offline, the network fetch would retry for seconds and warn on every start."""
    import subprocess
    import sys

    script = (
        "from llmops.gateway.config import GatewayConfig\n"
        "from llmops.gateway.router import build_router\n"
        "config = GatewayConfig.model_validate({'model_groups': {'g': {'deployments': ["
        "{'id': 'd', 'model': 'openai/gpt-4o-mini', 'api_base': 'http://127.0.0.1:9/v1'}]}},"
        " 'prices': [{'model': 'openai/gpt-4o-mini', 'input_per_mtok': '1',"
        " 'output_per_mtok': '2'}]})\n"
        "build_router(config)\n"
        "import litellm\n"
        "print(litellm.get_model_info('openai/gpt-4o-mini')['max_output_tokens'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "16384"
    assert "cost map" not in done.stderr.lower(), done.stderr
