"""The OpenAI-compatible HTTP gateway: a thin FastAPI app over the gateway core.

Routes: ``POST /v1/chat/completions`` (JSON or SSE streaming), ``GET /v1/models``,
``GET /healthz``, ``GET /metrics``. The app authenticates the tenant from
``Authorization: Bearer <key>``, validates the body, takes the feature from
``X-LLMOps-Feature`` (or ``metadata.feature``) and the action from ``X-LLMOps-Action-Id``,
and hands a :class:`ChatRequest` to the core; every policy (routing, caps, limits,
redaction, the request log) lives there. Errors use OpenAI's error body
(:mod:`llmops.gateway.http_errors` has the status table).

Everything per request is cheap on purpose: routes are plain Starlette routes (no
dependency injection), bodies are validated once by pydantic from bytes, responses are
serialized with orjson, and the app, its metrics and the model list are built once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import orjson
from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from llmops.db.engine import check_connection
from llmops.db.models import Tenant
from llmops.errors import AuthError
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import ChatRequest, ChatResult
from llmops.gateway.http_actions import actions_router
from llmops.gateway.http_errors import error_body, error_response, http_error
from llmops.gateway.http_jobs import jobs_router
from llmops.gateway.http_metrics import GatewayMetrics
from llmops.gateway.http_models import InvalidRequest, parse_chat_request, to_chat_request
from llmops.settings import Settings

__all__ = ["Authenticate", "ChatBackend", "create_app", "create_app_from_settings"]

#: Resolves the key of ``Authorization: Bearer <key>`` (``None`` when absent) to a tenant,
#: raising :class:`llmops.errors.AuthError` otherwise.
Authenticate = Callable[[str | None], Awaitable[Tenant]]

logger = logging.getLogger("llmops.gateway.http")

HEALTH_TIMEOUT_S = 5.0
#: Far above any context window in text; base64 images are what make bodies this large.
MAX_BODY_BYTES = 32 * 1024 * 1024
_JSON = "application/json"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"
#: LiteLLM's additions to OpenAI's response objects; ``usage.cost`` is LiteLLM's float
#: estimate, not the price book's, so it never reaches callers.
_LITELLM_ONLY = ("provider_specific_fields", "citations", "moderation")


class ChatBackend(Protocol):
    """What the app needs of the gateway core (:class:`llmops.gateway.core.Gateway`)."""

    config: GatewayConfig

    async def chat(self, req: ChatRequest) -> ChatResult: ...

    def stream(self, req: ChatRequest) -> AsyncIterator[Any]: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


def create_app(
    gateway: ChatBackend,
    engine: Engine,
    *,
    authenticate: Authenticate | None = None,
    metrics: GatewayMetrics | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    owns_gateway: bool = False,
) -> FastAPI:
    """The HTTP app serving ``gateway``; ``engine`` is the ops DB (health, default auth).

    ``authenticate`` defaults to the cached key lookup of :mod:`llmops.tenants`; bodies
    over ``max_body_bytes`` get 413. At shutdown (SIGTERM, after in-flight requests) the
    request log is flushed; with ``owns_gateway`` the gateway is closed and ``engine``
    disposed too.
    """
    if authenticate is None:
        from llmops.tenants import authenticator_for

        authenticate = authenticator_for(engine).authenticate_async
    if metrics is None:
        from llmops.telemetry.metrics import OpsCollector

        metrics = GatewayMetrics(gateway.config.model_groups)
        # Shared state read from the ops DB at scrape time: caps, queue depth, alerts.
        budgets = getattr(gateway, "budgets", None)  # a test double may have none
        caps = budgets.list_caps if budgets is not None else None
        metrics.registry.register(OpsCollector(engine, caps=caps))
    chat = _ChatEndpoint(gateway, authenticate, metrics, max_body_bytes)
    models_body = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "llmops"}
                for name in gateway.config.model_groups
            ],
        }
    )

    async def list_models(request: Request) -> Response:
        try:
            await authenticate(_bearer(request.headers.get("authorization")))
        except AuthError as exc:
            return error_response(http_error(exc))
        return Response(models_body, media_type=_JSON)

    async def healthz(request: Request) -> Response:
        try:
            await asyncio.wait_for(
                asyncio.to_thread(check_connection, engine), timeout=HEALTH_TIMEOUT_S
            )
        except Exception as exc:  # any failure to answer SELECT 1 is "unhealthy"
            logger.warning("health check failed: %s", exc)
            body = {"status": "unavailable", "database": type(exc).__name__}
            return Response(orjson.dumps(body), status_code=503, media_type=_JSON)
        return Response(b'{"status":"ok","database":"ok"}', media_type=_JSON)

    async def prometheus(request: Request) -> Response:
        body = await asyncio.to_thread(metrics.render)  # the ops gauges read the DB
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_gateway:
            await gateway.aclose()
            engine.dispose()
        else:
            await gateway.flush()

    app = FastAPI(
        title="llmops gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.add_route("/v1/chat/completions", chat.handle, methods=["POST"])
    app.add_route("/v1/models", list_models, methods=["GET"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/metrics", prometheus, methods=["GET"])
    app.include_router(actions_router(engine, authenticate))
    app.include_router(jobs_router(engine, authenticate, gateway.config))
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.state.metrics = metrics
    return app


def create_app_from_settings(settings: Settings | None = None) -> FastAPI:
    """The app for the configured gateway file and ops DB (``llmops gateway serve``)."""
    from llmops.db.engine import engine_from_settings
    from llmops.gateway.core import Gateway
    from llmops.settings import apply_offline_env, get_settings

    settings = settings or get_settings()
    apply_offline_env()  # before the Router imports LiteLLM
    engine = engine_from_settings(settings)
    gateway = Gateway.from_settings(settings, engine)
    return create_app(gateway, engine, owns_gateway=True)


class _ChatEndpoint:
    """``POST /v1/chat/completions`` as a plain ASGI request handler."""

    def __init__(
        self,
        gateway: ChatBackend,
        authenticate: Authenticate,
        metrics: GatewayMetrics,
        max_body_bytes: int,
    ) -> None:
        self.gateway = gateway
        self.authenticate = authenticate
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        group = feature = ""
        try:
            headers = request.headers
            tenant = await self.authenticate(_bearer(headers.get("authorization")))
            chat = parse_chat_request(await _read_body(request, self.max_body_bytes))
            group = chat.model
            req = to_chat_request(
                chat,
                tenant_id=tenant.id,
                feature=headers.get("x-llmops-feature"),
                action_id=headers.get("x-llmops-action-id"),
            )
            feature = req.feature_id
            if chat.stream:
                include_usage = chat.stream_options is not None and bool(
                    chat.stream_options.include_usage
                )
                return await self._stream(req, include_usage, started)
            result = await self.gateway.chat(req)
        except Exception as exc:  # BaseException (cancellation) propagates untouched
            return self._fail(exc, group, feature, started)
        body = orjson.dumps(_openai_dict(result.response))
        self.metrics.observe(
            status=200,
            model_group=group,
            feature=feature,
            seconds=time.perf_counter() - started,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=result.cost_usd,
            cache_hit=result.cache_hit,
            degraded=result.degraded,
        )
        answer_headers = {
            "X-LLMOps-Request-Id": result.request_id,
            "X-LLMOps-Model-Group": result.model_group,
            "X-LLMOps-Cost-USD": str(result.cost_usd),
            **_served_headers(result.cache_hit, result.degraded, result.stale_age_s),
        }
        return Response(body, media_type=_JSON, headers=answer_headers)

    async def _stream(self, req: ChatRequest, include_usage: bool, started: float) -> Response:
        """Start the stream; errors before the first chunk become a normal error response."""
        chunks = self.gateway.stream(req)
        first = await anext(chunks, None)  # raises what the core raises before streaming
        metrics, group, feature = self.metrics, req.model_group, req.feature_id

        async def events() -> AsyncIterator[bytes]:
            status, error_class, usage = 200, None, None
            try:
                chunk = first
                while chunk is not None:
                    data = _openai_dict(chunk)
                    usage = data.get("usage") or usage
                    # The core always asks for usage; pass it on only as OpenAI would.
                    if include_usage:
                        data.setdefault("usage", None)
                        yield b"data: " + orjson.dumps(data) + b"\n\n"
                    elif data["choices"]:  # not the usage-only final chunk
                        data.pop("usage", None)
                        yield b"data: " + orjson.dumps(data) + b"\n\n"
                    chunk = await anext(chunks, None)
                yield _DONE
            except Exception as exc:
                # Headers are sent: report in-band, as OpenAI does, and end without [DONE].
                error = http_error(exc)
                status, error_class = error.status, error.error_class
                yield b"data: " + error_body(error) + b"\n\n"
            except BaseException:
                status, error_class = 499, "cancelled"  # the client went away
                raise
            finally:
                # The core logs the call when its generator ends; end it even when cancelled.
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
                metrics.observe(
                    status=status,
                    model_group=group,
                    feature=feature,
                    seconds=time.perf_counter() - started,
                    stream=True,
                    error_class=error_class,
                    input_tokens=int((usage or {}).get("prompt_tokens") or 0),
                    output_tokens=int((usage or {}).get("completion_tokens") or 0),
                )

        hidden = getattr(first, "_hidden_params", None) or {}
        headers = {
            **_SSE_HEADERS,
            **_served_headers(
                bool(hidden.get("llmops_cache_hit")),
                hidden.get("llmops_degraded"),
                hidden.get("llmops_stale_age_s"),
            ),
        }
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _fail(self, exc: Exception, group: str, feature: str, started: float) -> Response:
        error = http_error(exc)
        self.metrics.observe(
            status=error.status,
            model_group=group,
            feature=feature,
            seconds=time.perf_counter() - started,
            error_class=error.error_class,
        )
        return error_response(error, getattr(exc, "request_id", None))


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) <= limit:
        return await request.body()
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise InvalidRequest(
                f"request body is larger than the limit of {limit} bytes",
                code="request_too_large",
                status=413,
            )
        parts.append(part)
    return b"".join(parts)


def _served_headers(
    cache_hit: bool, degraded: str | None, stale_age_s: float | None
) -> dict[str, str]:
    """Headers saying an answer did not come fresh from a provider: ``X-LLMOps-Cache:
    hit``; ``X-LLMOps-Degraded: stale|static|downgraded`` (and the stale answer's age)."""
    headers: dict[str, str] = {}
    if cache_hit:
        headers["X-LLMOps-Cache"] = "hit"
    if degraded:
        headers["X-LLMOps-Degraded"] = degraded
    if stale_age_s is not None:
        headers["X-LLMOps-Stale-Age-S"] = f"{stale_age_s:.1f}"
    return headers


def _bearer(header: str | None) -> str | None:
    """The key of ``Authorization: Bearer <key>``; ``None`` when the header is absent."""
    if header is None:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError("expected 'Authorization: Bearer <key>'")
    return key.strip()


def _openai_dict(obj: Any) -> dict[str, Any]:
    """A LiteLLM response or chunk as OpenAI's JSON object."""
    data: dict[str, Any] = obj.model_dump()
    for key in _LITELLM_ONLY:
        data.pop(key, None)
    for choice in data.get("choices") or ():
        choice.pop("provider_specific_fields", None)
        inner = choice.get("message") or choice.get("delta")
        if inner:
            inner.pop("provider_specific_fields", None)
    usage = data.get("usage")
    if usage:
        usage.pop("cost", None)
    return data


async def _http_exception(request: Request, exc: Exception) -> Response:
    """404/405 and friends in OpenAI's error shape."""
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "error": {
            "message": f"{exc.detail}: {request.method} {request.url.path}",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found" if exc.status_code == 404 else None,
        }
    }
    return Response(
        orjson.dumps(body),
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
        media_type=_JSON,
    )
