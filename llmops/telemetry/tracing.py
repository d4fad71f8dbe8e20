"""OpenTelemetry traces for gateway requests, queue jobs and flow runs.

Spans follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``: system,
operation, request and response model, input and output tokens) plus llmops's own
``llmops.*`` attributes: tenant, feature, cost, cache hit, degradation, attempts, and the
Prefect flow run id when the call runs inside one (flows bind it with
:func:`bind_flow_run`; the engine never imports Prefect).

Export: :func:`configure` installs a tracer provider exporting over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, as
OpenTelemetry defines; otherwise spans are no-ops and cost next to nothing. An
unreachable collector never fails what it observes: export runs in a background thread,
failures are counted (:data:`EXPORT_FAILURES`) and logged once per minute.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

TRACER_NAME = "llmops"
_flow_run_id: ContextVar[str | None] = ContextVar("llmops_flow_run_id", default=None)
_configured = False
_lock = threading.Lock()


class _ExportFailures:
    """How many span batches could not be exported (reported, never raised)."""

    def __init__(self) -> None:
        self.count = 0
        self.last_error: str | None = None
        self._last_log = 0.0

    def record(self, error: str) -> None:
        self.count += 1
        self.last_error = error
        now = time.monotonic()
        if now - self._last_log > 60:
            self._last_log = now
            log.warning("OpenTelemetry export failed (%d so far): %s", self.count, error)


EXPORT_FAILURES = _ExportFailures()


def configure(
    service_name: str = "llmops",
    *,
    env: Mapping[str, str] | None = None,
    exporter: Any = None,
) -> bool:
    """Install the tracer provider once per process; whether spans are exported.

    ``exporter`` (a ``SpanExporter``) replaces OTLP, e.g. an in-memory one in tests; it is
    wired through a simple (synchronous) processor so tests see spans at once.
    """
    global _configured
    env = os.environ if env is None else env
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter is None and not endpoint:
        return False
    with _lock:
        if _configured and exporter is None:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SimpleSpanProcessor,
            SpanExporter,
        )

        provider = TracerProvider(
            resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)})
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            reporting = cast("SpanExporter", _Reporting(OTLPSpanExporter()))
            provider.add_span_processor(BatchSpanProcessor(reporting))
        trace.set_tracer_provider(provider)
        _configured = True
    return True


class _Reporting:
    """Wraps an exporter: a failed export is counted and logged, never raised."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.inner.export(spans)
        except Exception as exc:  # the collector must never break the pipeline
            EXPORT_FAILURES.record(f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        if result != SpanExportResult.SUCCESS:
            EXPORT_FAILURES.record(f"exporter returned {result.name}")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def bind_flow_run(flow_run_id: str | None) -> Iterator[None]:
    """Within this block, spans carry ``llmops.prefect.flow_run_id``."""
    token = _flow_run_id.set(flow_run_id)
    try:
        yield
    finally:
        _flow_run_id.reset(token)


def _common(span: Span) -> None:
    run = _flow_run_id.get()
    if run:
        span.set_attribute("llmops.prefect.flow_run_id", run)


def _provider(model: str | None) -> str | None:
    """LiteLLM's ``openai/gpt-4o-mini`` -> ``openai`` (the GenAI ``gen_ai.system``)."""
    if model and "/" in model:
        return model.split("/", 1)[0]
    return None


@contextmanager
def gateway_span(
    *,
    tenant_id: str,
    feature_id: str,
    model_group: str,
    max_tokens: int | None = None,
    temperature: float | None = None,
    stream: bool = False,
) -> Iterator[Span]:
    """The span of one gateway request; finish it with :func:`record_result`."""
    with tracer().start_as_current_span(
        f"chat {model_group}", kind=SpanKind.CLIENT, record_exception=True
    ) as span:
        _request_attributes(
            span, tenant_id, feature_id, model_group, max_tokens, temperature, stream
        )
        yield span


def record_result(
    span: Span,
    *,
    request_id: str,
    model: str | None,
    deployment_id: str | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
    attempts: int,
    cache_hit: bool = False,
    degraded: str | None = None,
    error_class: str | None = None,
) -> None:
    """Put what a finished request cost and returned on its span."""
    if not span.is_recording():
        return
    system = _provider(model)
    if system:
        span.set_attribute("gen_ai.system", system)
    if model:
        span.set_attribute("gen_ai.response.model", model.split("/", 1)[-1])
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    span.set_attribute("llmops.request_id", request_id)
    span.set_attribute("llmops.cost_usd", str(cost_usd))
    span.set_attribute("llmops.attempts", attempts)
    span.set_attribute("llmops.cache_hit", cache_hit)
    if deployment_id:
        span.set_attribute("llmops.deployment_id", deployment_id)
    if degraded:
        span.set_attribute("llmops.degraded", degraded)
    if error_class:
        span.set_attribute("error.type", error_class)
        span.set_status(Status(StatusCode.ERROR, error_class))


@contextmanager
def job_span(job_id: str, *, tenant_id: str, feature_id: str, attempt: int) -> Iterator[Span]:
    """The span of one queue job attempt (its gateway call is a child span)."""
    with tracer().start_as_current_span(f"job {feature_id}", kind=SpanKind.CONSUMER) as span:
        if span.is_recording():
            span.set_attribute("llmops.job_id", job_id)
            span.set_attribute("llmops.tenant_id", tenant_id)
            span.set_attribute("llmops.feature_id", feature_id)
            span.set_attribute("llmops.job.attempt", attempt)
            _common(span)
        yield span


@contextmanager
def flow_span(flow_name: str, flow_run_id: str | None, **attributes: Any) -> Iterator[Span]:
    """The span of a flow run; everything inside is its child and carries the run id."""
    with (
        bind_flow_run(flow_run_id),
        tracer().start_as_current_span(f"flow {flow_name}", kind=SpanKind.INTERNAL) as span,
    ):
        if span.is_recording():
            span.set_attribute("llmops.prefect.flow_name", flow_name)
            for key, value in attributes.items():
                span.set_attribute(f"llmops.{key}", value)
            _common(span)
        yield span


def start_gateway_span(
    *,
    tenant_id: str,
    feature_id: str,
    model_group: str,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> Span:
    """Like :func:`gateway_span`, for a stream: a span that is not made current (a stream
    is consumed across tasks) and that the caller ends."""
    span = tracer().start_span(f"chat {model_group}", kind=SpanKind.CLIENT)
    _request_attributes(span, tenant_id, feature_id, model_group, max_tokens, temperature, True)
    return span


def _request_attributes(
    span: Span,
    tenant_id: str,
    feature_id: str,
    model_group: str,
    max_tokens: int | None,
    temperature: float | None,
    stream: bool,
) -> None:
    """The GenAI request attributes and llmops's own, on a gateway span."""
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.operation.name", "chat")
    span.set_attribute("gen_ai.request.model", model_group)
    if max_tokens is not None:
        span.set_attribute("gen_ai.request.max_tokens", max_tokens)
    if temperature is not None:
        span.set_attribute("gen_ai.request.temperature", temperature)
    span.set_attribute("llmops.tenant_id", tenant_id)
    span.set_attribute("llmops.feature_id", feature_id)
    span.set_attribute("llmops.stream", stream)
    _common(span)


def trace_id_of(span: Span) -> str | None:
    """The span's trace id as 32 hex digits (what the request log stores), if recording."""
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None
