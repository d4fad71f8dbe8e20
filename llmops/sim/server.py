"""The simulator's HTTP surface (aiohttp): OpenAI chat completions, models, control endpoints.

Routes: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``GET /v1/models``
(and ``/models``, ``/v1/models/{model}``), ``GET /healthz``, and the test controls
``GET|POST /_sim/config``, ``GET /_sim/stats``, ``POST /_sim/reset``.

Faults are decided before any byte is sent, so an injected error is a plain HTTP error with
OpenAI's error body, as real providers send them, and it is returned without latency.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from llmops.errors import ConfigError
from llmops.sim.answers import DatasetAnswers, judge_reply
from llmops.sim.config import Profile, SimConfig
from llmops.sim.engine import Completion, FaultInjector, Stats, complete

__all__ = ["SimState", "build_app", "state_of"]

_JSON = "application/json"
_NO_MODEL = "-"
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "request_timeout"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    504: ("timeout", "gateway_timeout"),
}


class SimState:
    """Mutable state of one simulator app: config, fault streams, stats, hung requests."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.answers = DatasetAnswers.load(config.datasets, config.seed)
        self.faults = FaultInjector(config.seed)
        self.stats = Stats()
        self.closing = asyncio.Event()

    def configure(self, config: SimConfig) -> None:
        """Replace the config; reseeds faults and restarts ``fail_first`` (stats are kept)."""
        self.config = config
        self.answers = DatasetAnswers.load(config.datasets, config.seed)
        self.faults.reset(config.seed)

    def reset(self) -> None:
        """Clear stats, reseed faults and restart ``fail_first`` counters."""
        self.stats = Stats()
        self.faults.reset(self.config.seed)


_STATE = web.AppKey("llmops_sim_state", SimState)


def state_of(app: web.Application) -> SimState:
    """The :class:`SimState` behind an app made by :func:`build_app`."""
    return app[_STATE]


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON, headers=headers)


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    kind, code = _ERROR_KINDS.get(
        status, ("invalid_request_error" if status < 500 else "server_error", None)
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _json(body, status=status, headers=headers)


def _fault(status: int, model: str, profile: Profile) -> web.Response:
    headers: dict[str, str] = {}
    if status == 429:
        headers["Retry-After"] = f"{profile.retry_after_s:g}"
        headers["retry-after-ms"] = f"{profile.retry_after_s * 1000:.0f}"
    message = f"Simulated {status} for model {model} (llmops sim injected fault)."
    return _error(status, message, headers=headers)


def _authorized(request: web.Request, api_key: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and token.strip() == api_key


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _BadRequest(f"{key} must be a positive integer", key)
        return value
    return None


def _parse(raw: bytes) -> tuple[str, list[dict[str, Any]], int | None, bool, bool]:
    """(model, messages, max_tokens, stream, include_usage) of a chat request body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"Request body is not valid JSON: {exc}", None) from exc
    if not isinstance(body, dict):
        raise _BadRequest("Request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a role", "messages")
    if body.get("n") not in (None, 1):
        raise _BadRequest("the simulator only supports n=1", "n")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return model, messages, _max_tokens(body), stream, include_usage


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    config = state.config
    if config.api_key is not None and not _authorized(request, config.api_key):
        state.stats.record(_NO_MODEL, 401)
        return _error(401, "Incorrect API key provided.")
    try:
        model, messages, max_tokens, stream, include_usage = _parse(await request.read())
    except _BadRequest as exc:
        state.stats.record(_NO_MODEL, 400)
        return _error(400, str(exc), param=exc.param)
    profile = config.profile_for(model)
    if profile is None:
        state.stats.record(model, 404)
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, param="model")

    decision = state.faults.decide(model, profile)
    if decision.hang:
        state.stats.record(model, "hang")
        # Wait until the client gives up (the handler is cancelled) or the server stops.
        await state.closing.wait()
        return _error(503, "Simulator shutting down.")
    if decision.status != 200:
        state.stats.record(model, decision.status)
        return _fault(decision.status, model, profile)

    answer = judge_reply(messages) or state.answers.reply(messages, profile)
    completion = complete(model, messages, profile, max_tokens, answer)
    state.stats.record(model, 200)
    state.stats.record_tokens(model, completion.prompt_tokens, completion.completion_tokens)
    ttft_s = 0.0 if profile.ttft_ms.is_zero else state.faults.sample_ms(profile.ttft_ms) / 1000
    if stream:
        return await _stream(request, model, profile, completion, ttft_s, include_usage)
    delay = ttft_s + _generation_s(profile, completion.completion_tokens)
    if delay > 0:
        await asyncio.sleep(delay)
    return _json(_completion_body(model, completion), headers=_request_id())


def _generation_s(profile: Profile, tokens: int) -> float:
    return tokens / profile.tokens_per_s if profile.tokens_per_s > 0 else 0.0


def _request_id() -> dict[str, str]:
    return {"x-request-id": f"req_{uuid.uuid4().hex}"}


def _completion_body(model: str, completion: Completion) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_llmops_sim",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": completion.usage(),
    }


def _sse_events(
    model: str, profile: Profile, completion: Completion, include_usage: bool
) -> list[bytes]:
    """Every SSE event of one streamed answer, in order, ending with ``[DONE]``."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_llmops_sim",
    }
    if include_usage:
        base["usage"] = None

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    events = [event({"role": "assistant", "content": "", "refusal": None})]
    size = profile.stream_chunk_tokens
    pieces = completion.pieces
    for start in range(0, len(pieces), size):
        events.append(event({"content": "".join(pieces[start : start + size])}))
    events.append(event({}, completion.finish_reason))
    if include_usage:
        final = {**base, "choices": [], "usage": completion.usage()}
        events.append(b"data: " + orjson.dumps(final) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


async def _stream(
    request: web.Request,
    model: str,
    profile: Profile,
    completion: Completion,
    ttft_s: float,
    include_usage: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **_request_id()}
    )
    await response.prepare(request)
    events = _sse_events(model, profile, completion, include_usage)
    try:
        if ttft_s == 0.0 and profile.tokens_per_s == 0.0:
            await response.write(b"".join(events))  # one write: the fast path for benchmarks
        else:
            # Reasoning happens before the first visible token; content chunks then follow
            # at tokens_per_s. events = [role, content..., finish, (usage), DONE].
            await asyncio.sleep(ttft_s + _generation_s(profile, completion.reasoning_tokens))
            chunk_s = _generation_s(profile, profile.stream_chunk_tokens)
            n_content = len(events) - (4 if include_usage else 3)
            await response.write(events[0] + (events[1] if n_content else b""))
            for event in events[2 : 1 + n_content]:
                await asyncio.sleep(chunk_s)
                await response.write(event)
            await response.write(b"".join(events[1 + n_content :]))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-stream; nothing left to send
    return response


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "llmops-sim"}


async def _list_models(request: web.Request) -> web.Response:
    models = sorted(request.app[_STATE].config.models)
    return _json({"object": "list", "data": [_model_object(m) for m in models]})


async def _get_model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if request.app[_STATE].config.profile_for(model) is None:
        return _error(404, f"The model `{model}` does not exist.", param="model")
    return _json(_model_object(model))


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _get_config(request: web.Request) -> web.Response:
    return _json(request.app[_STATE].config.model_dump(mode="json"))


async def _set_config(request: web.Request) -> web.Response:
    try:
        raw = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"Request body is not valid JSON: {exc}")
    try:
        config = SimConfig.model_validate(raw, context={"file": "POST /_sim/config"})
    except ConfigError as exc:
        return _error(400, str(exc), param=exc.field)
    request.app[_STATE].configure(config)
    return _json({"status": "ok", "models": sorted(config.models)})


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[_STATE].stats.snapshot())


async def _reset(request: web.Request) -> web.Response:
    request.app[_STATE].reset()
    return _json({"status": "ok"})


async def _unknown_url(request: web.Request) -> web.Response:
    return _error(404, f"Invalid URL ({request.method} {request.path})")


async def _release_hangs(app: web.Application) -> None:
    app[_STATE].closing.set()


def build_app(config: SimConfig) -> web.Application:
    """The simulator as an aiohttp application serving ``config``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_STATE] = SimState(config)
    app.on_shutdown.append(_release_hangs)
    router = app.router
    for prefix in ("/v1", ""):
        router.add_post(f"{prefix}/chat/completions", _chat_completions)
        router.add_get(f"{prefix}/models", _list_models)
        router.add_get(f"{prefix}/models/{{model}}", _get_model)
    router.add_get("/healthz", _healthz)
    router.add_get("/_sim/config", _get_config)
    router.add_post("/_sim/config", _set_config)
    router.add_get("/_sim/stats", _stats)
    router.add_post("/_sim/reset", _reset)
    # Last, so it only catches what nothing above serves: OpenAI answers unknown URLs
    # (and wrong methods) with a JSON 404, which SDKs parse better than a text page.
    router.add_route("*", "/{tail:.*}", _unknown_url)
    return app
