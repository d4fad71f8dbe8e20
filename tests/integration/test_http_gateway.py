"""The HTTP gateway as a user meets it: uvicorn on a free port, the official OpenAI client,
the provider simulator, and a migrated ops DB on SQLite and Postgres."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.models import RequestLog
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import Gateway
from llmops.gateway.http import create_app
from llmops.sim import SimConfig, SimServer
from llmops.tenants import create_tenant, revoke

MESSAGES = [{"role": "user", "content": "Summarize: the export button does nothing."}]
FEATURE = {"X-LLMOps-Feature": "ticket-summary"}


def gateway_config(base_url: str, features: dict[str, Any] | None = None) -> GatewayConfig:
    def dep(dep_id: str, model: str) -> dict[str, Any]:
        return {"id": dep_id, "model": model, "api_base": base_url, "api_key": "sk-sim"}

    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 10, "num_retries": 0},
            "model_groups": {
                "fast": {"deployments": [dep("sim-mini", "openai/gpt-4o-mini")]},
                "solo": {"deployments": [dep("sim-solo", "openai/solo")]},
                "slow": {"deployments": [dep("sim-slow", "openai/slow")]},
            },
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"},
                {"model": "openai/solo", "input_per_mtok": "1", "output_per_mtok": "2"},
                {"model": "openai/slow", "input_per_mtok": "1", "output_per_mtok": "2"},
            ],
            "features": features or {},
        }
    )


SIM = {
    "seed": 5,
    "default": {"ttft_ms": 0, "tokens_per_s": 0},
    # Streams for ~5 s: long enough to hang up in the middle.
    "models": {"slow": {"tokens_per_s": 10, "min_output_tokens": 48, "stream_chunk_tokens": 1}},
}


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig.model_validate(SIM)) as server:
        yield server


@pytest.fixture
def base_url(sim: SimServer, db_engine: Engine) -> Iterator[str]:
    app = create_app(Gateway(gateway_config(sim.base_url), db_engine), db_engine)
    with serve(app) as url:
        yield url


@pytest.fixture
def key(db_engine: Engine) -> str:
    _, key = create_tenant(db_engine, "acme", "Acme Corp", plan="pro")
    return key


def client(base_url: str, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{base_url}/v1",
        api_key=key,
        default_headers=FEATURE | headers,
        max_retries=0,
        timeout=30,
    )


def log_rows(engine: Engine) -> list[RequestLog]:
    with Session(engine) as session:
        return list(session.exec(select(RequestLog).order_by(col(RequestLog.id))).all())


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_openai_client_chat_is_logged_with_tenant_feature_and_action(
    base_url: str, key: str, db_engine: Engine
) -> None:
    llm = client(base_url, key, **{"X-LLMOps-Action-Id": "act-42"})
    raw = llm.chat.completions.with_raw_response.create(
        model="fast", messages=MESSAGES, max_tokens=32, temperature=0.1, seed=3
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    text = completion.choices[0].message.content
    assert text and completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    (row,) = log_rows(db_engine)
    assert raw.headers["x-llmops-request-id"] == row.request_id
    assert Decimal(raw.headers["x-llmops-cost-usd"]) == row.cost_usd > 0
    assert (row.tenant_id, row.feature_id, row.action_id) == ("acme", "ticket-summary", "act-42")
    assert (row.status, row.model_group, row.stream) == ("ok", "fast", False)
    assert row.response_text == text
    assert row.output_tokens == completion.usage.completion_tokens


def test_openai_client_streams_with_usage(base_url: str, key: str, db_engine: Engine) -> None:
    stream = client(base_url, key).chat.completions.create(
        model="fast",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        metadata={"feature": "ignored-when-header-set"},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    (row,) = log_rows(db_engine)
    assert (row.status, row.stream, row.feature_id) == ("ok", True, "ticket-summary")
    assert row.response_text == text and text
    assert (row.input_tokens, row.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)


def test_stream_without_include_usage_has_no_usage_chunk(base_url: str, key: str) -> None:
    chunks = list(
        client(base_url, key).chat.completions.create(model="fast", messages=MESSAGES, stream=True)
    )
    assert chunks and all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_models_lists_the_model_groups(base_url: str, key: str) -> None:
    models = client(base_url, key).models.list()
    assert [m.id for m in models.data] == ["fast", "solo", "slow"]


def test_missing_unknown_and_revoked_keys_are_401(
    base_url: str, key: str, db_engine: Engine
) -> None:
    missing = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "fast", "messages": MESSAGES},
        headers=FEATURE,
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(base_url, "llm_" + "x" * 40).chat.completions.create(model="fast", messages=MESSAGES)

    llm = client(base_url, key)
    llm.chat.completions.create(model="fast", messages=MESSAGES)  # cached as valid now
    revoke(db_engine, "acme")
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        llm.chat.completions.create(model="fast", messages=MESSAGES)
    assert len(log_rows(db_engine)) == 1  # refused calls never reach the core


def test_unknown_model_group_is_400_and_costs_nothing(
    base_url: str, key: str, db_engine: Engine
) -> None:
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "gpt-5", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"} | FEATURE,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "unknown model group 'gpt-5'" in error["message"]
    assert error["type"] == "invalid_request_error"
    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class, row.cost_usd) == ("rejected", "validation", 0)


def test_malformed_json_is_400_and_logs_nothing(base_url: str, key: str, db_engine: Engine) -> None:
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        content=b'{"model": "fast", "messages": [}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"} | FEATURE,
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("request body is not valid JSON")
    assert log_rows(db_engine) == []


def test_upstream_failure_is_502_then_recovers(
    base_url: str, key: str, sim: SimServer, db_engine: Engine
) -> None:
    sim.configure({**SIM, "models": {"solo": {"fail_first": {"n": 1, "status": 503}}}})
    llm = client(base_url, key)
    with pytest.raises(openai.InternalServerError) as failed:
        llm.chat.completions.create(model="solo", messages=MESSAGES)
    assert failed.value.status_code == 502
    assert failed.value.response.json()["error"]["type"] == "upstream_error"
    assert llm.chat.completions.create(model="solo", messages=MESSAGES).choices
    error, ok = log_rows(db_engine)
    assert (error.status, error.error_class, error.cost_usd) == ("error", "server_error", 0)
    assert ok.status == "ok"


def test_hanging_up_mid_stream_still_logs_the_call(
    base_url: str, key: str, db_engine: Engine
) -> None:
    body = {"model": "slow", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {key}"} | FEATURE
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith("data: {")
    deadline = time.monotonic() + 10
    while not (rows := log_rows(db_engine)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (row,) = rows
    assert (row.status, row.stream, row.tenant_id) == ("cancelled", True, "acme")


def test_metrics_count_calls(base_url: str, key: str) -> None:
    llm = client(base_url, key)
    for _ in range(3):
        llm.chat.completions.create(model="fast", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        llm.chat.completions.create(model="nope", messages=MESSAGES)

    text = httpx.get(f"{base_url}/metrics").text
    feature = "ticket-summary"
    ok = metric(text, "llmops_requests_total", status="200", model_group="fast", feature=feature)
    assert ok == 3
    rejected = {"status": "400", "model_group": "_unknown", "feature": feature}
    assert metric(text, "llmops_requests_total", **rejected) == 1
    assert metric(text, "llmops_errors_total", error_class="validation") == 1
    assert metric(text, "llmops_cost_usd_total", model_group="fast", feature=feature) > 0
    tokens = {"direction": "input", "model_group": "fast", "feature": feature}
    assert metric(text, "llmops_tokens_total", **tokens) > 0
    latency = {"model_group": "fast", "stream": "false"}
    assert metric(text, "llmops_request_duration_seconds_count", **latency) == 3
    # Ops-DB gauges ride along: the scrape read the database and did not fail.
    assert metric(text, "llmops_ops_metrics_errors_total") == 0
    assert "# TYPE llmops_queue_depth gauge" in text


def test_healthz_answers_when_the_database_does(base_url: str) -> None:
    response = httpx.get(f"{base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_cached_and_degraded_answers_say_so_in_headers(
    sim: SimServer, db_engine: Engine, key: str
) -> None:
    config = gateway_config(
        sim.base_url,
        {
            "ticket-summary": {"cache": {"enabled": True, "ttl_s": 60}},
            "faq": {"degrade": {"on_failure": "static", "static_response": "Later."}},
        },
    )
    app = create_app(Gateway(config, db_engine), db_engine)
    headers = {"Authorization": f"Bearer {key}"}
    with serve(app) as url, httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        for stream in (False, True):
            body = {"model": "fast", "messages": MESSAGES, "stream": stream}
            first = http.post("/v1/chat/completions", json=body, headers=FEATURE)
            again = http.post("/v1/chat/completions", json=body, headers=FEATURE)
            assert first.status_code == again.status_code == 200
            assert "x-llmops-cache" not in first.headers or stream  # the stream hits chat's
            assert again.headers["x-llmops-cache"] == "hit"
        sim.configure({**SIM, "default": {**SIM["default"], "errors": {"503": 1.0}}})
        for stream in (False, True):
            body = {"model": "solo", "messages": MESSAGES, "stream": stream}
            degraded = http.post(
                "/v1/chat/completions", json=body, headers={"X-LLMOps-Feature": "faq"}
            )
            assert degraded.status_code == 200
            assert degraded.headers["x-llmops-degraded"] == "static"
            assert "Later." in degraded.text
        text = http.get("/metrics").text
        assert (
            metric(
                text,
                "llmops_cache_hits_total",
                model_group="fast",
                feature=FEATURE["X-LLMOps-Feature"],
            )
            >= 1
        )
        assert metric(text, "llmops_degraded_total", model_group="solo", kind="static") >= 1
