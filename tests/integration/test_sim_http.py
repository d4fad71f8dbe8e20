"""The simulator over real HTTP: OpenAI shapes, SSE, faults, controls, LiteLLM and the SDK."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmops.sim import SimConfig, SimServer, count_message_tokens, count_tokens

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Explain what a gateway does for LLM calls."},
]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    config = SimConfig.model_validate(
        {
            "seed": 1,
            "models": {
                "gpt-4o-mini": {"cached_tokens_ratio": 0.5, "reasoning_tokens": 0},
                "o4-mini": {"reasoning_tokens": 16},
                "limited": {"errors": {429: 1.0}, "retry_after_s": 3},
                "flaky": {"fail_first": {"n": 2, "status": 503}},
                "stuck": {"hang_rate": 1.0},
            },
        }
    )
    with SimServer(config) as server:
        yield server


def _chat(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


def _sim_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "llmops-sim"}


def _sse_payloads(text: str) -> list[str]:
    events = [block for block in text.split("\n\n") if block.strip()]
    assert all(event.startswith("data: ") for event in events)
    return [event.removeprefix("data: ") for event in events]


async def test_non_streaming_completion_shape_and_usage(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        response = await client.post("/chat/completions", json=_chat(user="u1", temperature=0))
        again = await client.post("/chat/completions", json=_chat())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_message_tokens(MESSAGES)
    assert usage["completion_tokens"] == count_tokens(content)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": usage["prompt_tokens"] // 2}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    # Deterministic: the same request gets the same answer.
    assert again.json()["choices"][0]["message"]["content"] == content


async def test_max_tokens_truncates_over_http(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        full = (await client.post("/chat/completions", json=_chat())).json()
        cut = (await client.post("/chat/completions", json=_chat(max_tokens=3))).json()
        newer = await client.post("/chat/completions", json=_chat(max_completion_tokens=3))
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    assert full["choices"][0]["message"]["content"].startswith(
        cut["choices"][0]["message"]["content"]
    )
    assert newer.json()["usage"]["completion_tokens"] == 3


async def test_streaming_sse_with_usage_chunk_and_done(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        plain = (await client.post("/chat/completions", json=_chat())).json()
        options = {"include_usage": True}
        response = await client.post(
            "/chat/completions", json=_chat(stream=True, stream_options=options)
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = _sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain["usage"]
    finish_chunk = chunks[-2]
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    content_chunks = [c["choices"][0]["delta"].get("content") or "" for c in chunks[1:-2]]
    assert len(content_chunks) >= 2
    assert "".join(content_chunks) == plain["choices"][0]["message"]["content"]
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_streaming_without_usage_option_has_no_usage_chunk(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        response = await client.post("/chat/completions", json=_chat(stream=True, max_tokens=5))
    payloads = _sse_payloads(response.text)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_models_and_healthz(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        models = (await client.get("/v1/models")).json()
        short = (await client.get("/models")).json()
        health = await client.get("/healthz")
        one = (await client.get("/v1/models/flaky")).json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert ids == sorted(["gpt-4o-mini", "o4-mini", "limited", "flaky", "stuck"])
    assert all(m["object"] == "model" for m in models["data"])
    assert short == models
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert one["id"] == "flaky"


async def test_429_carries_retry_after_and_openai_error_body(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        response = await client.post("/chat/completions", json=_chat("limited"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"


async def test_fail_first_then_success(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        statuses = [
            (await client.post("/chat/completions", json=_chat("flaky"))).status_code
            for _ in range(4)
        ]
        reset = (await client.post(f"{sim.url}/_sim/reset")).json()
        after_reset = await client.post("/chat/completions", json=_chat("flaky"))
    assert statuses == [503, 503, 200, 200]
    assert reset == {"status": "ok"}
    assert after_reset.status_code == 503
    assert after_reset.json()["error"]["type"] == "server_error"


async def test_hang_times_out_while_other_requests_stay_fast(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        hung = asyncio.create_task(
            client.post("/chat/completions", json=_chat("stuck"), timeout=1.0)
        )
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        fast = await client.post("/chat/completions", json=_chat("gpt-4o-mini"))
        elapsed = time.perf_counter() - started
        assert not hung.done()
        with pytest.raises(httpx.ReadTimeout):
            await hung
    assert fast.status_code == 200
    assert elapsed < 0.5
    assert sim.stats()["models"]["stuck"]["by_status"] == {"hang": 1}


def test_hung_request_does_not_delay_shutdown() -> None:
    config = SimConfig.model_validate({"default": {"hang_rate": 1.0}})
    server = SimServer(config)
    server.start()
    result: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(f"{server.base_url}/chat/completions", json=_chat(), timeout=10)
        except BaseException as exc:
            result.append(exc)

    client = threading.Thread(target=call)
    client.start()
    time.sleep(0.2)
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 2.0
    client.join(5)
    assert not client.is_alive()


async def test_runtime_reconfiguration_and_stats(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        ok = await client.post("/v1/chat/completions", json=_chat())
        new = {"strict_models": True, "models": {"only-model": {"echo": True}}}
        configured = await client.post("/_sim/config", json=new)
        models = (await client.get("/v1/models")).json()
        echoed = await client.post("/v1/chat/completions", json=_chat("only-model"))
        unknown = await client.post("/v1/chat/completions", json=_chat("gpt-4o-mini"))
        invalid = await client.post("/_sim/config", json={"models": {"x": {"errors": {"429": 2}}}})
        current = (await client.get("/_sim/config")).json()
        stats = (await client.get("/_sim/stats")).json()
        await client.post("/_sim/reset")
        cleared = (await client.get("/_sim/stats")).json()
    assert ok.status_code == 200
    assert configured.json() == {"status": "ok", "models": ["only-model"]}
    assert [m["id"] for m in models["data"]] == ["only-model"]
    assert echoed.json()["choices"][0]["message"]["content"] == MESSAGES[-1]["content"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "models.x.errors.429"
    assert current["strict_models"] is True  # the invalid config was not applied
    assert stats["total"] == 3
    assert stats["models"]["gpt-4o-mini"]["by_status"] == {"200": 1, "404": 1}
    assert stats["models"]["only-model"]["by_status"] == {"200": 1}
    assert stats["models"]["only-model"]["completion_tokens"] == count_tokens(
        MESSAGES[-1]["content"]
    )
    assert cleared == {"total": 0, "models": {}}


async def test_bad_requests_get_400_with_param(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        bad_json = await client.post("/chat/completions", content=b"{not json")
        no_model = await client.post("/chat/completions", json={"messages": MESSAGES})
        no_messages = await client.post("/chat/completions", json={"model": "m"})
        bad_max = await client.post("/chat/completions", json=_chat(max_tokens=0))
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    assert (no_model.status_code, no_model.json()["error"]["param"]) == (400, "model")
    assert (no_messages.status_code, no_messages.json()["error"]["param"]) == (400, "messages")
    assert (bad_max.status_code, bad_max.json()["error"]["param"]) == (400, "max_tokens")


def test_api_key_is_enforced_when_configured() -> None:
    with SimServer(SimConfig(api_key="sk-right")) as server, httpx.Client() as client:
        url = f"{server.base_url}/chat/completions"
        wrong = client.post(url, json=_chat(), headers={"Authorization": "Bearer sk-wrong"})
        missing = client.post(url, json=_chat())
        right = client.post(url, json=_chat(), headers={"Authorization": "Bearer sk-right"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert missing.status_code == 401
    assert right.status_code == 200


def test_latency_is_applied() -> None:
    config = SimConfig.model_validate(
        {
            "default": {
                "ttft_ms": 150,
                "tokens_per_s": 200,
                "min_output_tokens": 20,
                "max_output_tokens": 20,
                "stream_chunk_tokens": 5,
            }
        }
    )
    with SimServer(config) as server, httpx.Client(base_url=server.base_url) as client:
        started = time.perf_counter()
        client.post("/chat/completions", json=_chat())
        whole = time.perf_counter() - started
        started = time.perf_counter()
        with client.stream("POST", "/chat/completions", json=_chat(stream=True)) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            first_at = time.perf_counter() - started
            rest = [line for line in lines if line.startswith("data: ")]
        total = time.perf_counter() - started
    assert whole >= 0.15 + 20 / 200
    assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    assert first_at >= 0.15
    assert total >= 0.15 + 15 / 200  # three chunk gaps of 5 tokens after the first
    assert rest[-1] == "data: [DONE]"


def test_sim_server_sync_api_and_clean_exit() -> None:
    threads_before = _sim_threads()
    with SimServer() as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        server.configure({"models": {"a": {"fail_first": {"n": 1, "status": 500}}}})
        with httpx.Client(base_url=server.base_url) as client:
            first = client.post("/chat/completions", json=_chat("a"))
            second = client.post("/chat/completions", json=_chat("a"))
        assert (first.status_code, second.status_code) == (500, 200)
        assert server.stats()["models"]["a"]["by_status"] == {"200": 1, "500": 1}
        server.reset()
        assert server.stats() == {"total": 0, "models": {}}
        port = server.port
    assert _sim_threads() == threads_before  # our server thread is gone
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


async def test_async_context_manager_and_unknown_url() -> None:
    threads_before = _sim_threads()
    server = SimServer()
    server.configure({"strict_models": True, "models": {"m": {}}})  # before start
    async with server as sim, httpx.AsyncClient(base_url=sim.url) as client:
        ok = await client.post("/v1/chat/completions", json=_chat("m"))
        unknown_model = await client.post("/v1/chat/completions", json=_chat("other"))
        unknown_url = await client.get("/v1/nothing-here")
        wrong_method = await client.get("/v1/chat/completions")
    assert ok.status_code == 200
    assert unknown_model.status_code == 404
    assert unknown_url.status_code == 404
    assert unknown_url.json()["error"]["message"] == "Invalid URL (GET /v1/nothing-here)"
    assert wrong_method.status_code == 404
    assert _sim_threads() == threads_before  # our server thread is gone


async def test_litellm_non_streaming_and_streaming_usage_matches_server(sim: SimServer) -> None:
    import litellm

    litellm.suppress_debug_info = True
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        expected = (await client.post("/chat/completions", json=_chat())).json()
    common: dict[str, Any] = {
        "model": "openai/gpt-4o-mini",
        "api_base": sim.base_url,
        "api_key": "sk-sim",
        "messages": MESSAGES,
        "max_retries": 0,
    }

    response = await litellm.acompletion(**common)
    assert response.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert response.usage.completion_tokens == expected["usage"]["completion_tokens"]
    assert response.usage.total_tokens == expected["usage"]["total_tokens"]
    assert (
        response.usage.prompt_tokens_details.cached_tokens
        == expected["usage"]["prompt_tokens_details"]["cached_tokens"]
    )

    stream = await litellm.acompletion(
        **common, stream=True, stream_options={"include_usage": True}
    )
    parts: list[str] = []
    usages = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if getattr(chunk, "usage", None) is not None:
            usages.append(chunk.usage)
    assert "".join(parts) == expected["choices"][0]["message"]["content"]
    assert usages
    assert usages[-1].prompt_tokens == expected["usage"]["prompt_tokens"]
    assert usages[-1].completion_tokens == expected["usage"]["completion_tokens"]
    by_status = sim.stats()["models"]["gpt-4o-mini"]["by_status"]
    assert by_status == {"200": 3}


async def test_openai_sdk_non_streaming_and_streaming(sim: SimServer) -> None:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": MESSAGES[0]["content"]},
        {"role": "user", "content": MESSAGES[1]["content"]},
    ]
    async with AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model="o4-mini",
            messages=messages,
            max_completion_tokens=20,
        )
        stream = await client.chat.completions.create(
            model="o4-mini",
            messages=messages,
            max_completion_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 20
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 16
    assert reply.choices[0].finish_reason == "length"
    assert count_tokens(reply.choices[0].message.content or "") == 4
    assert text == reply.choices[0].message.content
    assert usage is not None
    assert usage.completion_tokens == 20
