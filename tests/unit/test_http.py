"""The HTTP app over a fake gateway core: request validation, auth, errors, SSE, metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from llmops.db.engine import make_engine
from llmops.db.models import Tenant
from llmops.errors import (
    AuthError,
    BudgetExceeded,
    ContentPolicyError,
    DatabaseUnavailable,
    PermanentError,
    PolicyBlocked,
    PricingError,
    RateLimited,
    RetryableError,
    ValidationError,
)
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import ChatRequest, ChatResult
from llmops.gateway.http import create_app
from llmops.gateway.http_metrics import GatewayMetrics
from llmops.gateway.pricebook import Usage

KEY = "llm_" + "k" * 40
AUTH = {"Authorization": f"Bearer {KEY}", "X-LLMOps-Feature": "ticket-summary"}
MESSAGES = [{"role": "user", "content": "hi"}]
CONFIG = GatewayConfig.model_validate(
    {
        "model_groups": {
            "fast": {"deployments": [{"id": "d1", "model": "openai/gpt-4o-mini"}]},
            "smart": {"deployments": [{"id": "d2", "model": "openai/gpt-4o"}]},
        },
        "prices": [
            {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"},
            {"model": "openai/gpt-4o", "input_per_mtok": "2.5", "output_per_mtok": "10"},
        ],
    }
)


class Obj(BaseModel):
    """Stands in for LiteLLM's response objects: any fields, and ``model_dump()``."""

    model_config = ConfigDict(extra="allow")


RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "provider_specific_fields": {},
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "hello", "provider_specific_fields": {}},
            "provider_specific_fields": {},
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


def chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "citations": None,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }


USAGE_CHUNK = {
    "id": "chatcmpl-2",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "cost": 1e-05},
}
CHUNKS = [chunk("hel"), chunk("lo"), chunk(None, "stop"), USAGE_CHUNK]


class FakeGateway:
    """Records requests; answers with canned objects or raises ``error``."""

    config = CONFIG

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self.error: BaseException | None = None
        self.stream_error_after: int | None = None
        self.streams_closed = 0

    async def chat(self, req: ChatRequest) -> ChatResult:
        self.requests.append(req)
        if self.error is not None:
            raise self.error
        return ChatResult(
            request_id="req_01",
            text="hello",
            finish_reason="stop",
            model_group="fast",
            deployment_id="d1",
            model="openai/gpt-4o-mini",
            usage=Usage(input_tokens=5, output_tokens=2),
            cost_usd=Decimal("0.0000019"),
            price_version="v1",
            latency_ms=1,
            ttft_ms=None,
            attempts=1,
            fallbacks_used=0,
            response=Obj(**RESPONSE),
        )

    async def flush(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def stream(self, req: ChatRequest) -> AsyncIterator[Any]:
        self.requests.append(req)
        try:
            if self.error is not None and self.stream_error_after is None:
                raise self.error
            for i, data in enumerate(CHUNKS):
                if i == self.stream_error_after:
                    assert self.error is not None
                    raise self.error
                yield Obj(**data)
        finally:
            self.streams_closed += 1


async def fake_authenticate(key: str | None) -> Tenant:
    if key is None:
        raise AuthError("missing API key")
    if key != KEY:
        raise AuthError("invalid API key")
    return Tenant(id="acme", name="Acme")


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine("sqlite://")
    yield engine
    engine.dispose()


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def client(gateway: FakeGateway, engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway, engine, authenticate=fake_authenticate)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/v1/chat/completions", content=content, headers=AUTH | headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def sse_events(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    assert all(block.startswith("data: ") for block in blocks[:-1])
    return [block.removeprefix("data: ") for block in blocks[:-1]]


# -- success ------------------------------------------------------------------------------


async def test_chat_passes_the_request_through_and_returns_openai_json(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    body = {
        "model": "fast",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi", "name": "dana"},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n"],
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "seed": 7,
        "user": "end-user-1",
        "n": 1,
    }
    response = await post(client, body, **{"X-LLMOps-Action-Id": "act-9"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-llmops-request-id"] == "req_01"
    assert response.headers["x-llmops-cost-usd"] == "0.0000019"
    assert response.headers["x-llmops-model-group"] == "fast"
    answer = response.json()
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert "provider_specific_fields" not in answer and answer["usage"]["total_tokens"] == 7
    (req,) = gateway.requests
    assert (req.tenant_id, req.feature_id, req.action_id) == ("acme", "ticket-summary", "act-9")
    assert req.model_group == "fast" and req.messages == body["messages"]
    assert (req.max_tokens, req.temperature) == (50, 0.2)
    assert req.params == {
        "top_p": 0.9,
        "stop": ["\n"],
        "response_format": {"type": "json_object"},
        "tools": body["tools"],
        "tool_choice": "auto",
        "seed": 7,
        "user": "end-user-1",
    }


async def test_feature_comes_from_metadata_when_no_header(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    body = {"model": "fast", "messages": MESSAGES, "metadata": {"feature": "reply-draft"}}
    response = await client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200, response.text
    assert gateway.requests[0].feature_id == "reply-draft"
    assert gateway.requests[0].action_id is None and gateway.requests[0].max_tokens is None


async def test_feature_header_wins_over_metadata(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    body = {"model": "fast", "messages": MESSAGES, "metadata": {"feature": "reply-draft"}}
    assert (await post(client, body)).status_code == 200
    assert gateway.requests[0].feature_id == "ticket-summary"


# -- request validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (b'{"model": "fast", "messages": [', "request body is not valid JSON", None),
        (b"", "request body is empty", None),
        (b"[1, 2]", "request body must be a JSON object", None),
        ({"model": "fast"}, "missing required parameter: 'messages'", "messages"),
        ({"messages": MESSAGES}, "missing required parameter: 'model'", "model"),
        ({"model": "fast", "messages": []}, "invalid value for 'messages'", "messages"),
        (
            {"model": "fast", "messages": [{"role": "robot", "content": "x"}]},
            "invalid value for 'messages.0.role'",
            "messages.0.role",
        ),
        (
            {"model": "fast", "messages": MESSAGES, "frobnicate": 1},
            "unrecognized request argument: 'frobnicate'",
            "frobnicate",
        ),
        ({"model": "fast", "messages": MESSAGES, "n": 2}, "n > 1 is not supported", "n"),
        (
            {"model": "fast", "messages": MESSAGES, "temperature": 3},
            "invalid value for 'temperature'",
            "temperature",
        ),
        (
            {"model": "fast", "messages": MESSAGES, "stream_options": {"include_usage": True}},
            "stream_options is only allowed when stream is true",
            "stream_options",
        ),
        (
            {"model": "fast", "messages": MESSAGES, "max_tokens": 5, "max_completion_tokens": 5},
            "not both",
            "max_tokens",
        ),
        ({"model": "fast", "messages": MESSAGES, "max_tokens": 0}, "max_tokens", "max_tokens"),
    ],
)
async def test_invalid_bodies_are_400_and_never_reach_the_core(
    client: httpx.AsyncClient,
    gateway: FakeGateway,
    body: Any,
    message: str,
    param: str | None,
) -> None:
    response = await post(client, body)
    assert response.status_code == 400
    error = error_of(response)
    assert message in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert gateway.requests == []


async def test_missing_feature_is_400(client: httpx.AsyncClient, gateway: FakeGateway) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "fast", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 400
    assert "X-LLMOps-Feature" in error_of(response)["message"]
    assert gateway.requests == []


async def test_overlong_attribution_is_400(client: httpx.AsyncClient, gateway: FakeGateway) -> None:
    body = {"model": "fast", "messages": MESSAGES}
    assert (await post(client, body, **{"X-LLMOps-Feature": "f" * 65})).status_code == 400
    assert (await post(client, body, **{"X-LLMOps-Action-Id": "a" * 101})).status_code == 400
    assert gateway.requests == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_bodies_over_the_limit_are_413(
    gateway: FakeGateway, engine: Engine, chunked: bool
) -> None:
    app = create_app(gateway, engine, authenticate=fake_authenticate, max_body_bytes=200)
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "x" * 300}]})

    async def parts() -> AsyncIterator[bytes]:
        yield body[:100].encode()
        yield body[100:].encode()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        content = parts() if chunked else body.encode()
        response = await http.post("/v1/chat/completions", content=content, headers=AUTH)
        assert response.status_code == 413
        assert error_of(response)["code"] == "request_too_large"
        small = {"model": "fast", "messages": MESSAGES}
        assert (await http.post("/v1/chat/completions", json=small, headers=AUTH)).is_success
    assert len(gateway.requests) == 1


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer " + "x" * 44, "Basic dXNlcjpwYXNz", "Bearer "]
)
async def test_missing_or_bad_keys_are_401_before_the_body_is_read(
    client: httpx.AsyncClient, gateway: FakeGateway, authorization: str | None
) -> None:
    headers = {"X-LLMOps-Feature": "f"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.post("/v1/chat/completions", content=b"{not json", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert error_of(response)["code"] == "invalid_api_key"
    assert gateway.requests == []
    assert (await client.get("/v1/models", headers=headers)).status_code == 401


# -- errors from the core ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (
            ValidationError("unknown model group 'x'"),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (AuthError("revoked"), 401, "invalid_request_error", "invalid_api_key"),
        (BudgetExceeded("cap"), 402, "insufficient_quota", "budget_exceeded"),
        (PolicyBlocked("ssn found"), 400, "invalid_request_error", "pii_blocked"),
        (ContentPolicyError("no"), 400, "invalid_request_error", "content_policy_violation"),
        (
            PermanentError("bad", error_class="bad_request"),
            400,
            "invalid_request_error",
            "bad_request",
        ),
        (
            PermanentError("too long", error_class="context_window"),
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (PermanentError("key", error_class="auth"), 502, "upstream_error", "auth"),
        (
            PermanentError("?", error_class="provider_error"),
            502,
            "upstream_error",
            "provider_error",
        ),
        (RetryableError("503", error_class="server_error"), 502, "upstream_error", "server_error"),
        (RetryableError("429", error_class="rate_limit"), 502, "upstream_error", "rate_limit"),
        (RetryableError("slow", error_class="timeout"), 504, "timeout_error", "timeout"),
        (
            RateLimited("slow down", retry_after_s=1.2),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (DatabaseUnavailable("db at 10.0.0.1 down"), 503, "server_error", "database_unavailable"),
        (
            RetryableError("redis at 10.0.0.1 down", error_class="rate_limiter_unavailable"),
            503,
            "server_error",
            "rate_limiter_unavailable",
        ),
        (PricingError("no price for x"), 500, "server_error", "unpriced_model"),
        (RuntimeError("secret internals"), 500, "server_error", "internal_error"),
    ],
)
async def test_core_errors_map_to_status_and_openai_body(
    client: httpx.AsyncClient,
    gateway: FakeGateway,
    error: Exception,
    status: int,
    type_: str,
    code: str,
) -> None:
    error.request_id = "req_failed"  # type: ignore[attr-defined]
    gateway.error = error
    for stream in (False, True):
        response = await post(client, {"model": "fast", "messages": MESSAGES, "stream": stream})
        assert response.status_code == status
        body = error_of(response)
        assert (body["type"], body["code"]) == (type_, code)
        assert response.headers["x-llmops-request-id"] == "req_failed"
        if isinstance(error, RateLimited):
            assert response.headers["retry-after"] == "2"  # 1.2 s, rounded up
        else:
            assert "retry-after" not in response.headers
        if status >= 500 and not isinstance(error, PricingError):
            assert "10.0.0.1" not in body["message"] and "internals" not in body["message"]


# -- streaming -----------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_is_openai_sse_ending_in_done(
    client: httpx.AsyncClient, gateway: FakeGateway, include_usage: bool
) -> None:
    body: dict[str, Any] = {"model": "fast", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = await post(client, body)

    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text == "hello"
    assert all("citations" not in c for c in chunks)
    if include_usage:
        assert len(chunks) == 4 and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
        }
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert len(chunks) == 3 and all("usage" not in c for c in chunks)
    assert gateway.streams_closed == 1


async def test_error_mid_stream_is_an_error_event_without_done(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    gateway.error = RetryableError("connection reset", error_class="connection")
    gateway.stream_error_after = 2
    response = await post(client, {"model": "fast", "messages": MESSAGES, "stream": True})

    assert response.status_code == 200  # headers went out with the first chunk
    events = sse_events(response)
    assert "[DONE]" not in events
    assert len(events) == 3
    assert json.loads(events[-1])["error"]["code"] == "connection"
    assert gateway.streams_closed == 1


# -- other routes --------------------------------------------------------------------------


async def test_models_lists_the_model_groups(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fast", "smart"]
    assert all(m["object"] == "model" for m in body["data"])


async def test_unknown_routes_use_openai_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/embeddings", headers=AUTH)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    response = await client.get("/v1/chat/completions", headers=AUTH)
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    error_of(response)


async def test_healthz_checks_the_database(client: httpx.AsyncClient, tmp_path: Path) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}

    broken = make_engine(f"sqlite:///{tmp_path}")  # a directory: cannot be opened
    app = create_app(FakeGateway(), broken, authenticate=fake_authenticate)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        response = await http.get("/healthz")
    broken.dispose()
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


async def test_metrics_count_requests_errors_tokens_and_cost(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    body = {"model": "fast", "messages": MESSAGES}
    for _ in range(2):
        assert (await post(client, body)).status_code == 200
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert (await post(client, stream)).status_code == 200
    assert (await post(client, b"{")).status_code == 400
    gateway.error = ValidationError("unknown model group 'nope'")
    assert (await post(client, {**body, "model": "nope"})).status_code == 400

    text = (await client.get("/metrics")).text
    feature = "ticket-summary"
    assert (
        sample(text, "llmops_requests_total", status="200", model_group="fast", feature=feature)
        == 3
    )
    assert (
        sample(text, "llmops_requests_total", status="400", model_group="_unknown", feature=feature)
        == 1
    )
    assert sample(text, "llmops_requests_total", status="400", model_group="", feature="") == 1
    assert sample(text, "llmops_errors_total", error_class="validation") == 2
    tokens = sample(
        text, "llmops_tokens_total", direction="output", model_group="fast", feature=feature
    )
    assert tokens == 6  # 2 answers and 1 stream of 2 output tokens each
    cost = sample(text, "llmops_cost_usd_total", model_group="fast", feature=feature)
    assert cost == pytest.approx(2 * 0.0000019)  # streams carry no cost (the core does not say)
    assert (
        sample(text, "llmops_request_duration_seconds_count", model_group="fast", stream="true")
        == 1
    )


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels}")


def test_metric_labels_chosen_by_callers_are_bounded() -> None:
    metrics = GatewayMetrics(["fast"], max_features=2)
    assert [metrics.group(g) for g in ("fast", "made-up", "")] == ["fast", "_unknown", ""]
    assert [metrics.feature(f) for f in ("a", "b", "c", "a", "")] == ["a", "b", "_other", "a", ""]
