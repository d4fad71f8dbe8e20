"""The gateway core: every LLM call goes through :meth:`Gateway.chat` or :meth:`Gateway.stream`.

A call is admitted (validation, PII redaction, token limits, rate limits, a worst-case hold
on every spend cap: see :mod:`llmops.gateway.admission`), routed through LiteLLM's Router,
priced, settled, and logged: one request_log row, whatever happened. The provider and the
log see only redacted text; the caller gets the original values back in the answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic_core import PydanticUndefined
from sqlalchemy import Engine

from llmops.db.models import RequestLog
from llmops.errors import (
    BudgetExceeded,
    GatewayError,
    PricingError,
    RateLimited,
    RetryableError,
    ValidationError,
)
from llmops.gateway.admission import Admission, Admitter
from llmops.gateway.attempts import METADATA_KEY, tracker
from llmops.gateway.budget import BudgetAlert, BudgetManager
from llmops.gateway.budget_leases import CapLeases
from llmops.gateway.cache import CachedAnswer, ResponseCache, cache_key, make_cache
from llmops.gateway.config import FeaturePolicy, GatewayConfig
from llmops.gateway.pricebook import Usage
from llmops.gateway.ratelimit_core import RateLimiter
from llmops.gateway.replay import as_chunks, mark
from llmops.gateway.requestlog import RequestLogWriter
from llmops.gateway.router import build_router, translate_error
from llmops.gateway.upkeep import Keeper, Upkeep
from llmops.ids import new_id, new_trace_id, utcnow
from llmops.settings import Settings
from llmops.telemetry import tracing


@dataclass
class ChatRequest:
    """What a caller asks the gateway for."""

    tenant_id: str
    feature_id: str
    messages: list[dict[str, Any]]
    model_group: str
    max_tokens: int | None = None
    temperature: float | None = None
    action_id: str | None = None
    job_id: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatResult:
    """The answer and its accounting."""

    request_id: str
    text: str
    finish_reason: str | None
    model_group: str
    deployment_id: str | None
    model: str | None
    usage: Usage
    cost_usd: Decimal
    price_version: str | None
    latency_ms: int
    ttft_ms: int | None
    attempts: int
    fallbacks_used: int
    response: Any = field(repr=False, default=None)  # LiteLLM's ModelResponse
    cache_hit: bool = False
    degraded: str | None = None  # "stale" or "static": not a fresh answer
    stale_age_s: float | None = None


def _trace_id() -> str:
    try:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return f"{ctx.trace_id:032x}"
    except ImportError:  # pragma: no cover - opentelemetry-api ships with Prefect
        pass
    return new_trace_id()


#: Every request_log column but the sequence id, at its default; rows start from a copy.
#: Plain dicts, not SQLModel objects: attribute instrumentation costs ~0.5 ms a call.
_ROW_DEFAULTS: dict[str, Any] = {
    name: info.default
    for name, info in RequestLog.model_fields.items()
    if name != "id" and info.default is not PydanticUndefined
}


#: How a caller leaving shows up inside the generator or the task.
_GONE = (GeneratorExit, asyncio.CancelledError)


def _degradable(exc: BaseException) -> bool:
    """Failures a degradation policy may answer: every deployment failed, or a hard cap."""
    if isinstance(exc, BudgetExceeded):
        return True
    if isinstance(exc, RateLimited):
        return False
    mapped = exc if isinstance(exc, GatewayError) else translate_error(exc)
    return isinstance(mapped, RetryableError)


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    return Usage(
        input_tokens=int(getattr(raw, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
        cached_tokens=int(getattr(prompt_details, "cached_tokens", 0) or 0),
        reasoning_tokens=int(getattr(completion_details, "reasoning_tokens", 0) or 0),
    )


class Gateway:
    """Routes calls through LiteLLM, prices them, and writes the request log."""

    def __init__(
        self,
        config: GatewayConfig,
        engine: Engine,
        *,
        router: Any | None = None,
        limiter: RateLimiter | None = None,
        budgets: BudgetManager | None = None,
        cache: ResponseCache | None = None,
        default_max_tokens: int = 1024,
        redaction_hash_key: str | None = None,
        log_text: bool = True,
        wait_for_log: bool = True,
        log_async_commit: bool = False,
        clock: Callable[[], datetime] = utcnow,
        on_budget_alert: Callable[[BudgetAlert], None] | None = None,
        upkeep: Upkeep | None = None,
    ) -> None:
        from llmops.gateway.ratelimit import DbRateLimiter, LeasedRateLimiter

        self.config = config
        self.prices = config.price_book()
        self.router = router if router is not None else build_router(config)
        self.limiter = limiter if limiter is not None else LeasedRateLimiter(DbRateLimiter(engine))
        self.budgets = budgets if budgets is not None else BudgetManager(engine, clock=clock)
        if on_budget_alert is not None:
            self.budgets.on_alert = on_budget_alert
        #: This process's leases of spend-cap headroom: calls are admitted from memory.
        self.leases = CapLeases(self.budgets)
        self.cache = cache if cache is not None else make_cache(None)
        self.admitter = Admitter(
            config,
            limiter=self.limiter,
            leases=self.leases,
            default_max_tokens=default_max_tokens,
            hash_key=redaction_hash_key,
        )
        self._attempts = tracker()
        self._group_of = {
            dep.id: name for name, group in config.model_groups.items() for dep in group.deployments
        }
        # The spend of the calls logged in a batch is booked in the batch's transaction.
        self.log = RequestLogWriter(
            engine, hook=self.leases.log_hook, async_commit=log_async_commit
        )
        self.log_text = log_text
        self.wait_for_log = wait_for_log
        self.clock = clock
        self.upkeep = upkeep if upkeep is not None else Upkeep()
        self._keeper = Keeper(self.upkeep, self.limiter, self.leases, self.budgets)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> Gateway:
        """The gateway the settings describe: config file, shared rate limits (Redis or the
        ops DB), response cache (Redis or in-process), redaction key, log options."""
        from llmops.gateway.config import load_gateway_config
        from llmops.gateway.ratelimit import make_rate_limiter

        hash_key = settings.redaction_hash_key
        return cls(
            load_gateway_config(settings.gateway_config),
            engine,
            limiter=make_rate_limiter(settings.redis_url, engine),
            cache=make_cache(settings.redis_url),
            default_max_tokens=settings.default_max_tokens,
            redaction_hash_key=hash_key.get_secret_value() if hash_key else None,
            log_text=settings.log_text,
            wait_for_log=settings.log_wait,
            log_async_commit=settings.log_async_commit,
        )

    # -- public API -------------------------------------------------------------------

    async def chat(self, req: ChatRequest) -> ChatResult:
        """One non-streaming completion; raises a :class:`GatewayError` subclass on failure.

        A feature with the cache on is answered from it when it can; a feature with a
        degradation policy gets a stale or static answer instead of an upstream error.
        Each call is an OpenTelemetry span (GenAI attributes, tenant, feature, cost).
        """
        with tracing.gateway_span(
            tenant_id=req.tenant_id,
            feature_id=req.feature_id,
            model_group=req.model_group,
            max_tokens=req.max_tokens,
            temperature=req.temperature,
        ) as span:
            return await self._chat(req, span)

    async def _chat(self, req: ChatRequest, span: Any) -> ChatResult:
        row = self._start(req)
        row["_span"] = span
        t0 = time.perf_counter()
        adm: Admission | None = None
        policy = self.config.feature(req.feature_id)
        key: str | None = None
        try:
            req = await self._maybe_downgrade(req, row, policy)
            adm = self._prepare(req, row)
            key = self._cache_key(req, adm, policy)
            if key is not None and policy.cache.enabled:
                hit = await self.cache.get(key)
                if hit is not None and hit.age_s(time.time()) <= policy.cache.ttl_s:
                    return await self._answer_from(row, adm, hit, t0, degraded=None)
            await self._hold(req, adm, row)
            response = await self.router.acompletion(**self._call_args(req, adm, row, stream=False))
            choice = response.choices[0]
            text = choice.message.content or ""
            usage = _usage(response.usage)
            result = self._finish(
                row, req, response._hidden_params, usage, text, choice.finish_reason, t0, None
            )
            await self.admitter.settle(
                adm, tokens=usage.input_tokens + usage.output_tokens, cost=result.cost_usd
            )
            if key is not None:
                await self._remember(key, policy, row, text, choice.finish_reason, usage)
            if adm.redaction is not None:
                result.text = adm.restore(text)
                choice.message.content = result.text
            result.response = response
        except BaseException as exc:
            if adm is not None and policy.degrade.on_failure != "error" and _degradable(exc):
                served = await self._degrade(row, adm, key, policy, exc, t0)
                if served is not None:
                    return served
            error = await self._fail(row, exc, t0, adm)
            if error is exc:
                raise
            raise error from exc
        await self._write(row)
        return result

    async def stream(self, req: ChatRequest) -> AsyncIterator[Any]:
        """A streaming completion: yields LiteLLM chunks; logs once the stream ends.

        The feature's cache and degradation policy apply as to :meth:`chat`: a cached,
        stale or static answer streams as one content chunk, a finish chunk and a usage
        chunk, each marked in its ``_hidden_params`` (``llmops_cache_hit``,
        ``llmops_degraded``, ``llmops_stale_age_s``) so the HTTP layer can say so.
        """
        span = tracing.start_gateway_span(
            tenant_id=req.tenant_id,
            feature_id=req.feature_id,
            model_group=req.model_group,
            max_tokens=req.max_tokens,
            temperature=req.temperature,
        )
        try:
            # aclosing: a caller that leaves mid-stream closes the inner stream at once, so
            # its row is written as cancelled now, not whenever it is garbage-collected.
            async with aclosing(self._stream(req, span)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            span.end()

    async def _stream(self, req: ChatRequest, span: Any) -> AsyncGenerator[Any, None]:
        row = self._start(req)
        row["_span"] = span
        row["trace_id"] = tracing.trace_id_of(span) or row["trace_id"]
        row["stream"] = True
        t0 = time.perf_counter()
        adm: Admission | None = None
        stream: Any = None
        parts: list[str] = []
        policy = self.config.feature(req.feature_id)
        key: str | None = None
        yielded = False
        try:
            req = await self._maybe_downgrade(req, row, policy)
            adm = self._prepare(req, row)
            key = self._cache_key(req, adm, policy)
            if key is not None and policy.cache.enabled:
                hit = await self.cache.get(key)
                if hit is not None and hit.age_s(time.time()) <= policy.cache.ttl_s:
                    served = await self._answer_from(row, adm, hit, t0, degraded=None)
                    for chunk in as_chunks(served):
                        yield chunk
                    return
            await self._hold(req, adm, row)
            args = self._call_args(req, adm, row, stream=True)
            stream = await self.router.acompletion(**args)
            restorer = adm.redaction.stream_restorer() if adm.redaction is not None else None
            raw_usage: Any = None
            finish: str | None = None
            ttft_ms: int | None = None
            async for chunk in stream:
                if chunk.choices:
                    delta = chunk.choices[0].delta
                    if delta is not None and delta.content:
                        if ttft_ms is None:
                            ttft_ms = int((time.perf_counter() - t0) * 1000)
                        parts.append(delta.content)
                        if restorer is not None:
                            delta.content = restorer.feed(delta.content)
                    if (
                        chunk.choices[0].finish_reason
                        and restorer is not None
                        and delta is not None
                    ):
                        delta.content = (delta.content or "") + restorer.flush()
                    finish = chunk.choices[0].finish_reason or finish
                raw_usage = getattr(chunk, "usage", None) or raw_usage
                if not yielded and row["degraded"] is not None:
                    mark(chunk, degraded=row["degraded"])
                yielded = True
                yield chunk
            hidden = getattr(stream, "_hidden_params", {}) or {}
            usage = _usage(raw_usage)
            text = "".join(parts)
            result = self._finish(row, req, hidden, usage, text, finish, t0, ttft_ms)
            await self.admitter.settle(
                adm, tokens=usage.input_tokens + usage.output_tokens, cost=result.cost_usd
            )
            if key is not None:
                await self._remember(key, policy, row, text, finish, usage)
        except BaseException as exc:
            if (
                not yielded
                and adm is not None
                and policy.degrade.on_failure != "error"
                and _degradable(exc)
            ):
                degraded = await self._degrade(row, adm, key, policy, exc, t0)
                if degraded is not None:
                    for chunk in as_chunks(degraded):
                        yield chunk
                    return
            if stream is not None and adm is not None and isinstance(exc, _GONE):
                # The caller left mid-stream: the provider bills what it generated.
                self._charge_partial(row, adm, stream, parts)
            error = await self._fail(row, exc, t0, adm)
            if error is exc:
                raise
            raise error from exc
        await self._write(row)

    async def _remember(
        self,
        key: str,
        policy: FeaturePolicy,
        row: dict[str, Any],
        text: str,
        finish_reason: str | None,
        usage: Usage,
    ) -> None:
        """Keep a fresh answer (redacted, as the provider gave it) for cache and stale use."""
        answer = CachedAnswer(
            text,
            finish_reason,
            row["model"],
            row["deployment_id"],
            usage.input_tokens,
            usage.output_tokens,
            time.time(),
        )
        await self.cache.set(key, answer, max(policy.cache.ttl_s, policy.degrade.stale_max_age_s))

    def _charge_partial(
        self, row: dict[str, Any], adm: Admission, stream: Any, parts: list[str]
    ) -> None:
        """Price an abandoned stream: the input, and the output streamed so far."""
        from llmops.gateway.admission import count_text_tokens

        hidden = getattr(stream, "_hidden_params", {}) or {}
        deployment = self.config.deployment(str(hidden.get("model_id") or ""))
        if deployment is None:
            return
        text = "".join(parts)
        usage = Usage(adm.input_tokens, count_text_tokens(deployment.model, text))
        try:
            cost, version = self.prices.cost(deployment.price_model, usage, row["started_at"])
        except PricingError:
            return
        row["deployment_id"], row["model"] = deployment.id, deployment.model
        row["provider"] = deployment.provider
        row["input_tokens"], row["output_tokens"] = usage.input_tokens, usage.output_tokens
        row["cost_usd"], row["price_version"] = cost, version
        row["response_text"] = text if self.log_text else None
        adm.partial_cost = cost
        adm.partial_tokens = usage.input_tokens + usage.output_tokens

    # -- steps ------------------------------------------------------------------------

    def _start(self, req: ChatRequest) -> dict[str, Any]:
        now = self.clock()
        return {
            **_ROW_DEFAULTS,
            "request_id": new_id("req"),
            "started_at": now,
            "ended_at": now,
            "logged_at": now,
            # Cut to the column sizes so even a rejected overlong id is logged, not lost.
            "tenant_id": str(req.tenant_id)[:64],
            "feature_id": str(req.feature_id)[:64],
            "action_id": req.action_id[:100] if req.action_id else None,
            "job_id": req.job_id[:40] if req.job_id else None,
            "prompt_name": req.prompt_name[:100] if req.prompt_name else None,
            "prompt_version": req.prompt_version,
            "model_group": str(req.model_group)[:100],
            "status": "started",
            "trace_id": _trace_id(),
        }

    async def _maybe_downgrade(
        self, req: ChatRequest, row: dict[str, Any], policy: FeaturePolicy
    ) -> ChatRequest:
        """Past the feature's soft-cap threshold, route it to its cheaper model group."""
        cheaper = policy.degrade.soft_cap_model_group
        if cheaper is None or cheaper == req.model_group or not req.tenant_id:
            return req
        used = await asyncio.to_thread(
            self.budgets.soft_cap_used_pct, req.tenant_id, req.feature_id
        )
        if used < policy.degrade.soft_cap_threshold_pct:
            return req
        row["model_group"], row["degraded"] = cheaper, "downgraded"
        return dataclasses.replace(req, model_group=cheaper)

    def _prepare(self, req: ChatRequest, row: dict[str, Any]) -> Admission:
        """Validate, redact and measure (no I/O); the row gets the redacted text only."""
        admitter = self.admitter
        admitter.validate(
            req.tenant_id, req.feature_id, req.model_group, req.messages, req.max_tokens
        )
        adm = admitter.redact(req.tenant_id, req.feature_id, req.messages)
        if adm.redaction is not None:
            row["redactions"] = adm.redaction.total
        if self.log_text:
            row["request_text"] = json.dumps(adm.messages, ensure_ascii=False)
        admitter.measure(adm, req.model_group, req.max_tokens)
        return adm

    async def _hold(self, req: ChatRequest, adm: Admission, row: dict[str, Any]) -> None:
        """Take the rate limits and the worst-case spend-cap holds."""
        self._keeper.ensure_running()
        await self.admitter.hold(
            adm,
            tenant_id=req.tenant_id,
            feature_id=req.feature_id,
            group=req.model_group,
            at=row["started_at"],
        )

    def _cache_key(self, req: ChatRequest, adm: Admission, policy: FeaturePolicy) -> str | None:
        if not policy.cache.enabled and policy.degrade.on_failure != "stale":
            return None
        params = {**req.params, "max_tokens": req.max_tokens, "temperature": req.temperature}
        return cache_key(req.tenant_id, req.model_group, adm.messages, params)

    async def _answer_from(
        self,
        row: dict[str, Any],
        adm: Admission,
        answer: CachedAnswer,
        t0: float,
        *,
        degraded: str | None,
    ) -> ChatResult:
        """A result (and its row) from a stored answer: no provider call, no cost."""
        import litellm

        text = adm.restore(answer.text)
        if degraded is None:
            row["status"], row["cache_hit"] = "ok", True
        else:
            row["status"], row["degraded"] = "degraded", degraded
        row["model"], row["deployment_id"] = answer.model, answer.deployment_id
        row["input_tokens"], row["output_tokens"] = answer.input_tokens, answer.output_tokens
        row["response_text"] = answer.text if self.log_text else None
        row["latency_ms"] = int((time.perf_counter() - t0) * 1000)
        row["ended_at"] = self.clock()
        await self._write(row)
        response = litellm.ModelResponse(
            id=row["request_id"],
            model=answer.model or row["model_group"],
            choices=[
                {
                    "index": 0,
                    "finish_reason": answer.finish_reason or "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            usage={
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        )
        return ChatResult(
            request_id=row["request_id"],
            text=text,
            finish_reason=answer.finish_reason,
            model_group=row["model_group"],
            deployment_id=answer.deployment_id,
            model=answer.model,
            usage=Usage(answer.input_tokens, answer.output_tokens),
            cost_usd=Decimal(0),
            price_version=None,
            latency_ms=row["latency_ms"],
            ttft_ms=None,
            attempts=row["attempts"],
            fallbacks_used=row["fallbacks_used"],
            response=response,
            cache_hit=degraded is None,
            degraded=degraded,
            stale_age_s=answer.age_s(time.time()) if degraded == "stale" else None,
        )

    async def _degrade(
        self,
        row: dict[str, Any],
        adm: Admission,
        key: str | None,
        policy: FeaturePolicy,
        exc: BaseException,
        t0: float,
    ) -> ChatResult | None:
        """A stale or static answer in place of an upstream failure or a hard cap, or None."""
        degrade = policy.degrade
        answer: CachedAnswer | None = None
        if degrade.on_failure == "stale" and key is not None:
            answer = await self.cache.get(key)
            if answer is not None and answer.age_s(time.time()) > degrade.stale_max_age_s:
                answer = None
        elif degrade.on_failure == "static" and degrade.static_response:
            answer = CachedAnswer(degrade.static_response, "stop", None, None, 0, 0, time.time())
        if answer is None:
            return None
        await self.admitter.release(adm)
        self._record_attempts(row, final=None)
        mapped = exc if isinstance(exc, GatewayError) else translate_error(exc)
        row["error_class"] = mapped.error_class if mapped is not None else "error"
        row["error_message"] = str(exc).split("\n", 1)[0][:1000]
        kind = "stale" if degrade.on_failure == "stale" else "static"
        return await self._answer_from(row, adm, answer, t0, degraded=kind)

    def _call_args(
        self, req: ChatRequest, adm: Admission, row: dict[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        self._attempts.begin(row["request_id"])
        args: dict[str, Any] = {
            **req.params,
            "model": req.model_group,
            "messages": adm.messages,
            "metadata": {
                "tenant_id": req.tenant_id,
                "feature_id": req.feature_id,
                METADATA_KEY: row["request_id"],
            },
        }
        if req.max_tokens is not None:
            args["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            args["temperature"] = req.temperature
        if stream:
            args["stream"] = True
            args["stream_options"] = {"include_usage": True}
        return args

    def _finish(
        self,
        row: dict[str, Any],
        req: ChatRequest,
        hidden: dict[str, Any],
        usage: Usage,
        text: str,
        finish_reason: str | None,
        t0: float,
        ttft_ms: int | None,
    ) -> ChatResult:
        deployment = self.config.deployment(str(hidden.get("model_id") or ""))
        row["deployment_id"] = deployment.id if deployment else hidden.get("model_id")
        row["model"] = deployment.model if deployment else hidden.get("litellm_model_name")
        row["provider"] = deployment.provider if deployment else hidden.get("custom_llm_provider")
        self._record_attempts(row, final=row["deployment_id"])
        row["input_tokens"] = usage.input_tokens
        row["output_tokens"] = usage.output_tokens
        row["cached_tokens"] = usage.cached_tokens
        row["reasoning_tokens"] = usage.reasoning_tokens
        row["latency_ms"] = int((time.perf_counter() - t0) * 1000)
        row["ttft_ms"] = ttft_ms
        row["ended_at"] = self.clock()
        row["response_text"] = text if self.log_text else None
        row["status"] = "ok"
        if deployment is None:
            raise PricingError(f"response came from unknown deployment {hidden.get('model_id')!r}")
        cost, version = self.prices.cost(deployment.price_model, usage, row["started_at"])
        row["cost_usd"], row["price_version"] = cost, version
        return ChatResult(
            request_id=row["request_id"],
            text=text,
            finish_reason=finish_reason,
            model_group=row["model_group"],
            deployment_id=row["deployment_id"],
            model=row["model"],
            usage=usage,
            cost_usd=cost,
            price_version=version,
            latency_ms=row["latency_ms"],
            ttft_ms=ttft_ms,
            attempts=row["attempts"],
            fallbacks_used=row["fallbacks_used"],
            degraded=row["degraded"],
        )

    async def _fail(
        self, row: dict[str, Any], exc: BaseException, t0: float, adm: Admission | None
    ) -> BaseException:
        """Record a failed call, give back its holds; return the error to raise instead."""
        error: BaseException
        if adm is not None:
            if isinstance(exc, PricingError) and row["deployment_id"] is not None:
                # Served but unpriceable: keep the worst-case hold as spend, never $0.
                if adm.hold is not None and adm.hold.keys:
                    await self.admitter.settle(adm, tokens=0, cost=adm.hold.amount)
            elif adm.partial_cost is not None:
                await self.admitter.settle(adm, tokens=adm.partial_tokens, cost=adm.partial_cost)
            else:
                await self.admitter.release(adm)
        if isinstance(exc, PricingError) and row["deployment_id"] is None:
            # Refused before the call: no price in force for a model it could reach.
            row["status"], row["error_class"], error = "rejected", "pricing", exc
        elif isinstance(exc, PricingError):
            # The provider answered (and will bill us); the row keeps its tokens, flagged.
            row["status"], row["error_class"], error = "unpriced", "pricing", exc
        elif isinstance(exc, ValidationError):
            row["status"], row["error_class"], error = "rejected", "validation", exc
        elif isinstance(exc, GatewayError):
            row["status"], row["error_class"], error = "error", exc.error_class, exc
        elif (mapped := translate_error(exc)) is not None:
            row["status"], row["error_class"], error = "error", mapped.error_class, mapped
            row["http_status"] = getattr(exc, "status_code", None)
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            row["status"], row["error_class"], error = "cancelled", "cancelled", exc
        else:
            row["status"], row["error_class"], error = "error", "internal", exc
        if row["status"] != "unpriced":  # unpriced: the call succeeded, already recorded
            streamed = adm is not None and adm.partial_cost is not None
            self._record_attempts(row, final=row["deployment_id"] if streamed else None)
        row["error_message"] = str(exc).split("\n", 1)[0][:1000]
        row["latency_ms"] = int((time.perf_counter() - t0) * 1000)
        row["ended_at"] = self.clock()
        await self._write(row)
        return error

    def _record_attempts(self, row: dict[str, Any], *, final: str | None) -> None:
        """Attempts, deployments tried and fallbacks, from the Router's failed attempts."""
        tried = [deployment for deployment, _ in self._attempts.end(row["request_id"])]
        if final is not None:
            tried.append(final)
        row["attempts"] = len(tried)
        row["deployments_tried"] = tried or None
        # The group routed to counts even when the Router skipped it untried (all of its
        # deployments resting in cooldown): an answer from another group is a fallback.
        groups = {row["model_group"], *(self._group_of.get(d, d) for d in tried)}
        row["fallbacks_used"] = len(groups) - 1 if tried else 0

    async def _write(self, row: dict[str, Any]) -> None:
        row["logged_at"] = self.clock()
        span = row.pop("_span", None)
        if span is not None:
            tracing.record_result(
                span,
                request_id=row["request_id"],
                model=row["model"],
                deployment_id=row["deployment_id"],
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                cost_usd=row["cost_usd"],
                attempts=row["attempts"],
                cache_hit=row["cache_hit"],
                degraded=row["degraded"],
                error_class=row["error_class"],
            )
        await self.log.write(row, wait=self.wait_for_log)

    async def flush(self) -> None:
        """Return once every request_log row of this gateway is committed, and the spend
        of every call that returned is booked on its spend caps."""
        await self.log.flush()
        if self.leases.pending():
            await asyncio.to_thread(self.leases.book_now)

    async def aclose(self) -> None:
        """Flush the request log, stop its writer, return this process's leases of cap
        headroom and rate-limit capacity, and close the rate limiter."""
        await self._keeper.stop()
        await self.log.aclose()
        await asyncio.to_thread(self.leases.close)
        await self.limiter.aclose()
        await self.cache.aclose()
