"""Tracing: GenAI-convention attributes, flow-run binding, and a collector that is down."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmops.telemetry import tracing


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    return span_exporter


def test_gateway_span_carries_genai_and_llmops_attributes(spans: InMemorySpanExporter) -> None:
    with (
        tracing.flow_span("llm-batch", "run-123"),
        tracing.job_span("job_1", tenant_id="acme", feature_id="triage", attempt=2),
        tracing.gateway_span(
            tenant_id="acme", feature_id="triage", model_group="chat-small", max_tokens=64
        ) as span,
    ):
        tracing.record_result(
            span,
            request_id="req_1",
            model="openai/gpt-4o-mini",
            deployment_id="d-mini",
            input_tokens=120,
            output_tokens=30,
            cost_usd=Decimal("0.000036"),
            attempts=1,
        )
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"flow llm-batch", "job triage", "chat chat-small"}
    chat = by_name["chat chat-small"]
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "chat-small"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == 120
    assert attrs["gen_ai.usage.output_tokens"] == 30
    assert attrs["llmops.cost_usd"] == "0.000036"
    assert attrs["llmops.tenant_id"] == "acme" and attrs["llmops.feature_id"] == "triage"
    assert attrs["llmops.prefect.flow_run_id"] == "run-123"
    # One trace: the job is the flow's child, the call is the job's child.
    job, flow = by_name["job triage"], by_name["flow llm-batch"]
    assert chat.parent is not None and job.parent is not None
    assert chat.parent.span_id == job.context.span_id
    assert job.parent.span_id == flow.context.span_id
    assert dict(job.attributes or {})["llmops.prefect.flow_run_id"] == "run-123"


def test_failed_call_marks_the_span_as_error(spans: InMemorySpanExporter) -> None:
    with tracing.gateway_span(tenant_id="a", feature_id="f", model_group="g") as span:
        tracing.record_result(
            span,
            request_id="req_2",
            model=None,
            deployment_id=None,
            input_tokens=10,
            output_tokens=0,
            cost_usd=Decimal(0),
            attempts=3,
            error_class="timeout",
        )
    [finished] = spans.get_finished_spans()
    assert finished.status.status_code.name == "ERROR"
    assert dict(finished.attributes or {})["error.type"] == "timeout"


def test_no_endpoint_means_no_export() -> None:
    assert tracing.configure(env={}) is False


def test_unreachable_collector_is_reported_not_raised(spans: InMemorySpanExporter) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tracing.gateway_span(tenant_id="a", feature_id="f", model_group="g"):
        pass
    finished = spans.get_finished_spans()
    reporting = tracing._Reporting(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=1)
    )
    before = tracing.EXPORT_FAILURES.count
    assert reporting.export(finished) == SpanExportResult.FAILURE
    assert tracing.EXPORT_FAILURES.count == before + 1
    reporting.shutdown()
