"""The Prefect queue-worker flow drains the queue (one module-scoped Prefect harness)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from llmops.db.engine import make_engine, session_scope
from llmops.db.migrate import upgrade
from llmops.db.models import Feature
from llmops.gateway.config import GatewayConfig
from llmops.queue import enqueue, get_job
from llmops.settings import get_settings
from llmops.sim import SimConfig, SimServer
from llmops.tenants import create_tenant


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def sim() -> Iterator[SimServer]:
    zero = {"ttft_ms": 0, "tokens_per_s": 0}
    with SimServer(SimConfig.model_validate({"seed": 4, "default": zero})) as server:
        yield server


@pytest.fixture
def queue_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: SimServer, prefect_harness: None
) -> Iterator[tuple[Engine, GatewayConfig]]:
    deployment = {"id": "d-mini", "model": "openai/gpt-4o-mini", "api_base": sim.base_url}
    deployment["api_key"] = "sk-test"
    config = {
        "settings": {"timeout_s": 5, "num_retries": 0},
        "model_groups": {"fast": {"deployments": [deployment]}},
        "prices": [
            {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.60"}
        ],
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    db_url = f"sqlite:///{tmp_path / 'ops.db'}"
    monkeypatch.setenv("LLMOPS_DATABASE_URL", db_url)
    monkeypatch.setenv("LLMOPS_GATEWAY_CONFIG", str(tmp_path / "gateway.yaml"))
    monkeypatch.setenv("LLMOPS_QUEUE_RETRY_BASE_S", "0")
    get_settings.cache_clear()
    upgrade(db_url)
    engine = make_engine(db_url)
    create_tenant(engine, "acme", "Acme")
    with session_scope(engine) as session:
        session.add(Feature(id="summary", default_model_group="fast"))
    yield engine, GatewayConfig.model_validate(config)
    engine.dispose()
    get_settings.cache_clear()


def test_the_worker_flow_drains_the_queue_until_empty(
    queue_env: tuple[Engine, GatewayConfig], sim: SimServer
) -> None:
    from flows.queue_worker import queue_worker

    engine, config = queue_env
    ids = [
        enqueue(
            engine,
            config,
            "acme",
            {"feature": "summary", "messages": [{"role": "user", "content": f"job {i}"}]},
        ).job["id"]
        for i in range(30)
    ]
    totals = asyncio.run(queue_worker(batch_size=10, concurrency=5))
    assert (totals["completed"], totals["dead"], totals["claimed"]) == (30, 0, 30)
    assert totals["rounds"] == 1 and Decimal(totals["cost_usd"]) > 0
    assert all(get_job(engine, job_id, tenant_id=None)["status"] == "completed" for job_id in ids)
    assert sim.stats()["total"] == 30
