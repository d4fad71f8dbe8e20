"""The gateway's housekeeping: what a crashed process left on a cap is swept without
waiting for a refusal, idle leases go back, and old reservation rows are deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from llmops.gateway.budget import BudgetManager
from llmops.gateway.budget_leases import CapLeases
from llmops.gateway.budget_ledger import LEASES, RESERVATIONS
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import ChatRequest, Gateway
from llmops.gateway.upkeep import Upkeep
from llmops.ids import utcnow
from llmops.sim import SimConfig, SimServer

FAST = Upkeep(interval_s=0.05, sweep_s=0.1, prune_s=0.1, retention=timedelta(days=7))


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig.model_validate({"seed": 1, "default": {}})) as server:
        yield server


def config(sim: SimServer) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 5, "num_retries": 0},
            "model_groups": {
                "g": {
                    "deployments": [
                        {"id": "d", "model": "openai/m", "api_base": sim.base_url, "api_key": "k"}
                    ]
                }
            },
            "prices": [{"model": "openai/m", "input_per_mtok": "1", "output_per_mtok": "2"}],
        }
    )


def req(tenant: str) -> ChatRequest:
    return ChatRequest(tenant, "f", [{"role": "user", "content": "hi"}], "g", max_tokens=16)


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "upkeep did not get there"
        await asyncio.sleep(0.05)


async def test_leases_and_holds_of_a_crashed_process_are_swept(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    budgets = BudgetManager(db_engine)
    budgets.set_cap(tenant_id="acme", feature_id=None, limit_usd=Decimal(1), period="total")
    # A process that died: its lease and a per-call hold, never renewed nor released.
    # (Its clock runs an hour behind, so what it wrote has expired by now.)
    crashed = BudgetManager(db_engine, clock=lambda: utcnow() - timedelta(hours=1))
    await CapLeases(crashed).hold("acme", "f", Decimal("0.10"))
    crashed.reserve(
        request_id="req_dead", tenant_id="acme", feature_id="f", amount_usd=Decimal("0.90")
    )
    (cap,) = budgets.list_caps()
    assert cap.reserved_usd == cap.limit_usd  # the cap is full of what the dead left

    gateway = make_gateway(config(sim), upkeep=FAST)
    await gateway.chat(req("other"))  # any call starts the gateway's upkeep

    def swept() -> bool:
        return count(db_engine, LEASES) == 0 and budgets.list_caps()[0].reserved_usd == 0

    await until(swept)
    assert count(db_engine, RESERVATIONS, RESERVATIONS.c.status == "expired") == 1


async def test_idle_leases_go_back_and_old_reservations_are_deleted(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    budgets = BudgetManager(db_engine)
    budgets.set_cap(tenant_id="acme", feature_id=None, limit_usd=Decimal(1), period="total")
    now = utcnow()
    old, recent = now - timedelta(days=30), now - timedelta(days=1)
    with db_engine.begin() as conn:
        for rid, status, at in [
            ("bres_old_settled", "settled", old),
            ("bres_old_released", "released", old),
            ("bres_old_held", "held", old),  # never deleted while held: the sweep's job
            ("bres_recent", "settled", recent),
        ]:
            conn.execute(
                RESERVATIONS.insert().values(
                    id=rid,
                    request_id=rid,
                    cap_ids=[],
                    amount_usd=0,
                    status=status,
                    created_at=at,
                    expires_at=at,
                )
            )
    gateway = make_gateway(config(sim), upkeep=FAST)
    gateway.leases.idle_s = 0.2
    await gateway.chat(req("acme"))
    await gateway.flush()
    (cap,) = budgets.list_caps()
    assert cap.spent_usd > 0 and cap.reserved_usd > 0  # the lease outlives the call...

    def returned() -> bool:
        return count(db_engine, LEASES) == 0 and budgets.list_caps()[0].reserved_usd == 0

    await until(returned)  # ...until it idles
    with db_engine.connect() as conn:
        left = set(conn.execute(select(RESERVATIONS.c.id)).scalars())
    assert "bres_old_settled" not in left and "bres_old_released" not in left
    assert "bres_recent" in left
