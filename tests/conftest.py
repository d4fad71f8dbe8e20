"""Shared test setup: offline defaults, folder-based markers, isolated settings."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from llmops.settings import apply_offline_env

apply_offline_env()

# Nothing a test runs may write into the working tree: point every default data location
# (ops DB, warehouse, Prefect home and results) at a throwaway folder first.
_SCRATCH = Path(tempfile.mkdtemp(prefix="llmops-tests-"))
os.environ["LLMOPS_DATA_DIR"] = str(_SCRATCH / "data")
os.environ["PREFECT_HOME"] = str(_SCRATCH / "prefect")
for _name in ("LLMOPS_DATABASE_URL", "LLMOPS_WAREHOUSE_PATH", "LLMOPS_GATEWAY_CONFIG"):
    os.environ.pop(_name, None)

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).relative_to(_HERE).parts[0]
        if kind in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, kind))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SCRATCH, ignore_errors=True)


_SPANS: object | None = None


@pytest.fixture
def span_exporter() -> object:
    """An in-memory OpenTelemetry exporter, installed once per session, emptied per test.

    OpenTelemetry lets a process set its tracer provider once, so every test that looks
    at spans shares this one.
    """
    global _SPANS
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmops.telemetry import tracing

    if _SPANS is None:
        _SPANS = InMemorySpanExporter()
        tracing.configure(exporter=_SPANS)
    assert isinstance(_SPANS, InMemorySpanExporter)
    _SPANS.clear()
    return _SPANS
