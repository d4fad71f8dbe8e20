"""The Prefect flows end to end: one session-scoped Prefect server, the simulator, SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, func, select
from sqlmodel import col

from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.db.models import RequestLog
from llmops.gateway.batch import BatchItem
from llmops.settings import get_settings
from llmops.sim import SimConfig, SimServer


@pytest.fixture
def sim() -> Iterator[SimServer]:
    zero = {"ttft_ms": 0, "tokens_per_s": 0}
    with SimServer(SimConfig.model_validate({"seed": 1, "default": zero})) as server:
        yield server


@pytest.fixture
def pipeline_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: SimServer, prefect_server: None
) -> Iterator[Engine]:
    """Settings pointing at a fresh SQLite ops DB, a warehouse and a gateway on ``sim``."""
    config = {
        "settings": {"timeout_s": 5, "num_retries": 0},
        "model_groups": {
            "fast": {
                "deployments": [
                    {
                        "id": "d-mini",
                        "model": "openai/gpt-4o-mini",
                        "api_base": sim.base_url,
                        "api_key": "sk-test",
                    }
                ]
            }
        },
        "prices": [
            {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.60"}
        ],
    }
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(yaml.safe_dump(config))
    db_url = f"sqlite:///{tmp_path / 'ops.db'}"
    monkeypatch.setenv("LLMOPS_DATABASE_URL", db_url)
    monkeypatch.setenv("LLMOPS_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
    monkeypatch.setenv("LLMOPS_GATEWAY_CONFIG", str(gateway_file))
    get_settings.cache_clear()
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def _items(n: int, prefix: str, group: str = "fast") -> list[BatchItem]:
    return [
        BatchItem(
            item_id=f"{prefix}-{i}",
            tenant_id="acme",
            feature_id="summary",
            model_group=group,
            messages=[{"role": "user", "content": f"summarize ticket {prefix} {i}"}],
            max_tokens=32,
        )
        for i in range(n)
    ]


def _rows(engine: Engine, prefix: str) -> list[Any]:
    with engine.connect() as conn:
        stmt = select(RequestLog.status, RequestLog.cost_usd).where(  # type: ignore[call-overload]
            col(RequestLog.action_id).like(f"{prefix}-%")
        )
        return list(conn.execute(stmt))


def test_llm_batch_logs_every_call_and_rerun_pays_nothing(
    pipeline_env: Engine, sim: SimServer
) -> None:
    from flows.llm_batch import llm_batch

    items = _items(25, "b1")
    summary = asyncio.run(llm_batch(items, chunk_size=10, concurrency=4))
    assert summary["items_ok"] == 25
    assert summary["items_failed"] == 0
    assert summary["calls"] == 25
    rows = _rows(pipeline_env, "b1")
    assert len(rows) == 25 and all(status == "ok" for status, _ in rows)
    assert Decimal(summary["cost_usd"]) == sum((cost for _, cost in rows), Decimal(0)) > 0
    served = sim.stats()["total"]
    assert served == 25

    again = asyncio.run(llm_batch(items, chunk_size=10, concurrency=4))
    assert again == summary
    assert sim.stats()["total"] == served  # no provider call the second time
    assert len(_rows(pipeline_env, "b1")) == 25


def test_transient_failures_retry_only_the_failed_items(
    pipeline_env: Engine, sim: SimServer
) -> None:
    from flows.llm_batch import llm_batch

    sim.configure(
        {
            "seed": 1,
            "default": {"ttft_ms": 0, "tokens_per_s": 0, "fail_first": {"n": 3, "status": 503}},
        }
    )
    summary = asyncio.run(llm_batch(_items(8, "b2"), chunk_size=8, concurrency=1))
    assert summary["items_ok"] == 8
    # 3 failed calls, then the task retry re-ran only those 3 items.
    assert summary["calls"] == 11 and summary["failed_calls"] == 3
    assert sim.stats()["total"] == 11
    statuses = sorted(status for status, _ in _rows(pipeline_env, "b2"))
    assert statuses.count("error") == 3 and statuses.count("ok") == 8


def test_permanent_failures_are_not_retried(pipeline_env: Engine, sim: SimServer) -> None:
    from flows.llm_batch import llm_batch

    items = _items(3, "b3") + _items(1, "b3-bad", group="no-such-group")
    summary = asyncio.run(llm_batch(items, chunk_size=10, concurrency=2))
    assert summary["items_ok"] == 3
    assert summary["items_failed"] == 1
    assert sim.stats()["total"] == 3
    with pipeline_env.connect() as conn:
        rejected = conn.execute(
            select(func.count()).where(col(RequestLog.status) == "rejected")
        ).scalar_one()
    assert rejected == 1


def test_warehouse_flow_loads_the_request_log(pipeline_env: Engine, sim: SimServer) -> None:
    from flows.llm_batch import llm_batch
    from flows.warehouse import warehouse_load

    asyncio.run(llm_batch(_items(5, "w1"), chunk_size=5, concurrency=5))
    first = asyncio.run(warehouse_load(settle_minutes=0))
    assert first["rows_inserted"] == 5 and first["total_rows"] == 5
    assert first["mirrored"]["spend_caps"] == 0 and "alerts" in first["mirrored"]
    second = asyncio.run(warehouse_load(settle_minutes=0))
    assert second["rows_inserted"] == 0 and second["total_rows"] == 5


def test_flow_runs_are_traced_with_their_run_id(
    pipeline_env: Engine, sim: SimServer, span_exporter: Any
) -> None:
    from flows.llm_batch import llm_batch

    async def run() -> Any:
        return await llm_batch(_items(2, "traced"), chunk_size=10, return_state=True)

    state = asyncio.run(run())
    run_id = str(state.state_details.flow_run_id)
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    flow_span = spans["flow llm-batch"]
    assert dict(flow_span.attributes)["llmops.prefect.flow_run_id"] == run_id
