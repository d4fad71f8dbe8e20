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


def _artifacts(key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list[Any]:
        async with get_client() as client:
            return list(
                await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
                )
            )

    return asyncio.run(read())


def test_billing_flows_rollup_sync_reconcile_and_the_gate_blocks_a_corrupted_rollup(
    pipeline_env: Engine, sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    import stripe
    from sqlalchemy import update
    from sqlmodel import select as smselect

    from flows.llm_batch import llm_batch
    from flows.reconcile import reconcile
    from flows.stripe_sync import stripe_sync
    from flows.usage_rollup import usage_rollup
    from llmops.billing.setup import run_setup
    from llmops.db.engine import session_scope
    from llmops.db.models import MeterUsage, StripeSyncLedger, UsageRollup
    from llmops.ids import utcnow
    from llmops.metering.plans import load_billing_config
    from llmops.metering.quality import DataQualityError
    from llmops.stripe_sim import StripeSim

    from .billing_helpers import log_rows, write_billing

    billing_file = write_billing(tmp_path)
    with StripeSim() as stripe_sim:
        monkeypatch.setenv("LLMOPS_BILLING_CONFIG", str(billing_file))
        monkeypatch.setenv("LLMOPS_STRIPE_API_KEY", "sk_test_flows")
        monkeypatch.setenv("LLMOPS_STRIPE_API_BASE", stripe_sim.url)
        get_settings.cache_clear()
        client = stripe.StripeClient(
            "sk_test_flows", base_addresses={"api": stripe_sim.url}, max_network_retries=0
        )
        run_setup(pipeline_env, load_billing_config(billing_file), client)
        asyncio.run(llm_batch(_items(4, "bill"), chunk_size=4, concurrency=4))  # this hour
        closed = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        log_rows(pipeline_env, [{"started_at": closed, "tenant_id": "acme"}] * 1)
        log_rows(pipeline_env, [{"started_at": closed, "tenant_id": "acme", "input_tokens": -1}])

        stats = asyncio.run(usage_rollup(settle_minutes=0))
        assert stats["hours"] == 2 and stats["rejected_rows"] == 1
        assert stats["gate"]["success"] is True
        assert _artifacts("metering-gate") and _artifacts("metering-rejects")
        with session_scope(pipeline_env) as session:
            usage = session.exec(smselect(MeterUsage)).all()
            assert {u.window_start for u in usage} >= {closed}

        with session_scope(pipeline_env) as session:
            session.execute(update(UsageRollup).values(output_tokens=UsageRollup.output_tokens + 5))
        with pytest.raises(DataQualityError, match="output_tokens_diff"):
            asyncio.run(stripe_sync(settle_minutes=0))
        assert any("FAILED" in (a.data or "") for a in _artifacts("metering-gate"))
        assert stripe_sim.stats()["events"] == 0
        with session_scope(pipeline_env) as session:
            assert session.exec(smselect(StripeSyncLedger)).all() == []
            session.execute(update(UsageRollup).values(output_tokens=UsageRollup.output_tokens - 5))

        report = asyncio.run(stripe_sync(settle_minutes=0))
        assert report["sent"] == 2  # the closed hour's input and output tokens
        assert stripe_sim.stats()["events"] == 2
        assert _artifacts("stripe-sync")
        result = asyncio.run(reconcile(days=1))
        assert result["ok"] is True
    get_settings.cache_clear()
