"""The job queue in process, on SQLite and Postgres: enqueue and its refusals, idempotency,
workers through the real gateway and simulator, retries, dead-letter and replay, fair
claims, recovery of an answered call after a lost lease, signed callbacks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import Engine, func, insert, select, update

from llmops.db.engine import session_scope
from llmops.db.models import ActionOutcome, Feature, PromptLabel, PromptVersion, RequestLog
from llmops.errors import ValidationError
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import ChatRequest, Gateway
from llmops.ids import new_id, utcnow
from llmops.prompts.files import PromptFile
from llmops.prompts.store import register_version
from llmops.queue import JobStore, QueueWorker, enqueue, get_job, verify
from llmops.queue.callbacks import ensure_secret
from llmops.queue.store import JOBS
from llmops.sim import SimConfig, SimServer
from llmops.tenants import create_tenant

PRICES = [{"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.60"}]


def queue_config(base_url: str, *, timeout_s: float = 10) -> GatewayConfig:
    """One priced group ``fast`` on the simulator, no gateway retries (the queue retries)."""
    deployment = {"id": "q-mini", "model": "openai/gpt-4o-mini", "api_base": base_url}
    deployment["api_key"] = "sk-sim"
    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": timeout_s, "num_retries": 0},
            "model_groups": {"fast": {"deployments": [deployment]}},
            "prices": PRICES,
        }
    )


def seed(engine: Engine) -> dict[str, str]:
    """Tenants acme and globex (id -> key), features summary (group fast) and triage."""
    keys = {t: create_tenant(engine, t, t.title())[1] for t in ("acme", "globex")}
    with session_scope(engine) as session:
        session.add(Feature(id="summary", default_model_group="fast"))
        session.add(Feature(id="triage"))
    return keys


def job_body(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "feature": "summary",
        "messages": [{"role": "user", "content": f"Summarize ticket #{i}."}],
        "max_tokens": 20,
        **extra,
    }


def add_prompt(engine: Engine, label: str = "production") -> int:
    prompt = PromptFile.model_validate(
        {
            "name": "summarize",
            "model_group": "fast",
            "messages": [{"role": "user", "content": "Summarize {{ ticket }} for {{ who }}."}],
        }
    )
    with session_scope(engine) as session:
        version = register_version(session, prompt).version
        session.add(PromptLabel(name="summarize", label=label, version=version))
    return version


@pytest.fixture
def sim() -> Iterator[SimServer]:
    zero = {"ttft_ms": 0, "tokens_per_s": 0}
    with SimServer(SimConfig.model_validate({"seed": 3, "default": zero})) as server:
        yield server


@pytest.fixture
def config(sim: SimServer) -> GatewayConfig:
    return queue_config(sim.base_url)


@pytest.fixture
def keys(db_engine: Engine) -> dict[str, str]:
    return seed(db_engine)


@pytest.fixture
def worker(
    db_engine: Engine, config: GatewayConfig, make_gateway: Callable[..., Gateway], keys: Any
) -> Callable[..., QueueWorker]:
    def make(**options: Any) -> QueueWorker:
        options.setdefault("retry_base_s", 0.0)
        options.setdefault("poll_s", 0.05)
        return QueueWorker(db_engine, make_gateway(config), **options)

    return make


def ok_rows(engine: Engine, job_id: str) -> list[RequestLog]:
    from sqlmodel import Session
    from sqlmodel import select as sm_select

    with Session(engine) as session:
        return list(
            session.exec(
                sm_select(RequestLog).where(RequestLog.job_id == job_id, RequestLog.status == "ok")
            ).all()
        )


# -- enqueue --------------------------------------------------------------------------


def test_enqueue_validates_and_stores_a_prompt_job(
    db_engine: Engine, config: GatewayConfig, keys: Any
) -> None:
    version = add_prompt(db_engine)
    spec = {
        "feature": "summary",
        "prompt": {"name": "summarize", "variables": {"ticket": "T-1", "who": "ops"}},
        "priority": 5,
    }
    submitted = enqueue(db_engine, config, "acme", spec)
    job = submitted.job
    assert submitted.created
    assert job["status"] == "queued"
    assert job["prompt"] == {
        "name": "summarize",
        "version": version,
        "label": None,
        "variables": {"ticket": "T-1", "who": "ops"},
    }
    assert job["model_group"] == "fast"
    assert get_job(db_engine, job["id"], tenant_id="acme")["priority"] == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature": "nope"}, "unknown feature 'nope'"),
        ({"feature": "triage"}, "no model group"),
        ({"model_group": "huge"}, "unknown model group 'huge'"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url must be an http"),
        ({"callback_url": "not a url"}, "callback_url must be an http"),
        ({"prompt": {"name": "summarize"}}, "exactly one of prompt or messages"),
        ({"messages": []}, "messages must not be empty"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"not_before": "2026-01-01T00:00:00"}, "not_before needs a time zone"),
        ({"messages": [{"role": "user", "content": "x" * 5000}]}, "over the limit of 4096"),
    ],
)
def test_enqueue_refuses_bad_jobs_with_a_clear_error(
    db_engine: Engine, config: GatewayConfig, keys: Any, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        enqueue(db_engine, config, "acme", job_body(**change), max_payload_bytes=4096)
    assert JobStore(db_engine).counts() == {}


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"name": "missing"}, "unknown prompt 'missing'"),
        ({"name": "summarize", "label": "staging"}, "has no label 'staging'"),
        ({"name": "summarize", "version": 9}, "has no version 9"),
        ({"name": "summarize", "variables": {"ticket": "T"}}, "missing variables: who"),
    ],
)
def test_enqueue_refuses_unknown_prompts_labels_and_missing_variables(
    db_engine: Engine, config: GatewayConfig, keys: Any, prompt: dict[str, Any], message: str
) -> None:
    add_prompt(db_engine)
    with pytest.raises(ValidationError, match=message):
        enqueue(db_engine, config, "acme", {"feature": "summary", "prompt": prompt})


def test_the_same_idempotency_key_returns_the_same_job(
    db_engine: Engine, config: GatewayConfig, keys: Any
) -> None:
    first = enqueue(db_engine, config, "acme", job_body(1, idempotency_key="k-1"))
    again = enqueue(db_engine, config, "acme", job_body(2, idempotency_key="k-1"))
    other_tenant = enqueue(db_engine, config, "globex", job_body(1, idempotency_key="k-1"))
    assert again.job["id"] == first.job["id"] and not again.created
    assert other_tenant.created and other_tenant.job["id"] != first.job["id"]
    assert JobStore(db_engine).counts() == {"queued": 2}


def test_a_job_is_visible_only_to_its_tenant(
    db_engine: Engine, config: GatewayConfig, keys: Any
) -> None:
    job = enqueue(db_engine, config, "acme", job_body()).job
    with pytest.raises(ValidationError, match="no job"):
        get_job(db_engine, job["id"], tenant_id="globex")


# -- workers --------------------------------------------------------------------------


async def test_a_worker_completes_jobs_through_the_gateway_and_logs_each_call_once(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    add_prompt(db_engine)
    ids = [enqueue(db_engine, config, "acme", job_body(i)).job["id"] for i in range(20)]
    prompt_job = enqueue(
        db_engine,
        config,
        "globex",
        {
            "feature": "summary",
            "prompt": {"name": "summarize", "variables": {"ticket": "T-9", "who": "me"}},
            "action_id": "act-42",
        },
    ).job["id"]
    stats = await worker(batch_size=8, concurrency=8).run(until_empty=True)
    assert (stats.completed, stats.dead, stats.ended) == (21, 0, "empty")
    for job_id in [*ids, prompt_job]:
        job = get_job(db_engine, job_id, tenant_id=None)
        rows = ok_rows(db_engine, job_id)
        assert job["status"] == "completed" and job["attempts"] == 1
        assert len(rows) == 1 and rows[0].request_id == job["request_id"]
        assert Decimal(job["cost_usd"]) == rows[0].cost_usd > 0
        assert job["result"]["text"] and job["history"][-1]["outcome"] == "ok"
    assert ok_rows(db_engine, prompt_job)[0].action_id == "act-42"
    assert ok_rows(db_engine, prompt_job)[0].prompt_name == "summarize"
    assert ok_rows(db_engine, ids[0])[0].action_id == ids[0]
    assert sim.stats()["total"] == 21
    # Each completed job makes its action a success (cost per successful action).
    with db_engine.connect() as conn:
        outcomes = {
            (o.action_id, o.outcome, o.source, o.job_id)
            for o in conn.execute(select(ActionOutcome.__table__)).all()  # type: ignore[attr-defined]
        }
    assert ("act-42", "success", "job", prompt_job) in outcomes
    assert len(outcomes) == 21


async def test_a_worker_claims_whole_batches_and_keeps_every_slot_busy(
    db_engine: Engine, config: GatewayConfig, keys: Any, sim: SimServer
) -> None:
    sim.configure({"seed": 1, "default": {"ttft_ms": 30, "tokens_per_s": 0}})
    ids = [enqueue(db_engine, config, "acme", job_body(i)).job["id"] for i in range(40)]

    class Counting(Gateway):
        in_flight = peak = 0

        async def chat(self, req: ChatRequest) -> Any:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                return await super().chat(req)
            finally:
                self.in_flight -= 1

    asks: list[tuple[int, int]] = []  # (jobs asked for, jobs held then)

    class Recording(JobStore):
        def claim(self, owner: str, limit: int, lease_s: float, now: Any) -> Any:
            asks.append((limit, len(w._running)))
            return super().claim(owner, limit, lease_s, now)

    gateway = Counting(config, db_engine)
    try:
        w = QueueWorker(db_engine, gateway, batch_size=6, concurrency=4, poll_s=0.05)
        w.store = Recording(db_engine)
        stats = await w.run(until_empty=True)
    finally:
        await gateway.aclose()
    assert (stats.claimed, stats.completed) == (40, 40)
    assert all(get_job(db_engine, i, tenant_id=None)["status"] == "completed" for i in ids)
    # Every claim is for a whole batch, made while half a batch still waits to run, so
    # the 4 slots never wait for a claim; at most 4 + 6 + 3 jobs are held at once.
    assert {limit for limit, _ in asks} == {6}
    assert max(held for _, held in asks) <= 4 + 3
    assert gateway.peak == 4


async def test_a_job_over_its_time_limit_is_a_retryable_timeout(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    sim.configure({"seed": 1, "default": {"ttft_ms": 3000}})
    job_id = enqueue(db_engine, config, "acme", job_body(max_attempts=2)).job["id"]
    stats = await worker(job_timeout_s=0.2).run(until_empty=True)
    job = get_job(db_engine, job_id, tenant_id=None)
    assert (stats.retried, stats.dead, job["status"]) == (1, 1, "dead")
    assert [h["error_class"] for h in job["history"]] == ["timeout", "timeout"]
    assert all(h["retryable"] for h in job["history"])


async def test_retryable_failures_back_off_then_dead_letter_with_history_and_replay(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    sim.configure({"seed": 1, "default": {"errors": {503: 1.0}}})
    job_id = enqueue(db_engine, config, "acme", job_body(max_attempts=3)).job["id"]
    stats = await worker().run(until_empty=True)
    job = get_job(db_engine, job_id, tenant_id=None)
    assert (stats.retried, stats.dead) == (2, 1)
    assert job["status"] == "dead" and job["attempts"] == 3
    assert "gave up after 3 attempts" in job["error"]
    assert [h["attempt"] for h in job["history"]] == [1, 2, 3]
    assert all(h["retryable"] for h in job["history"])

    store = JobStore(db_engine)
    assert [row["id"] for row in store.list_dead("acme", 10)] == [job_id]
    assert store.replay([job_id], None) == {job_id: "replayed"}
    assert store.replay([job_id], None)[job_id].startswith("not dead-lettered")
    assert get_job(db_engine, job_id, tenant_id=None)["status"] == "queued"

    sim.configure({"seed": 1, "default": {}})
    await worker().run(until_empty=True)
    job = get_job(db_engine, job_id, tenant_id=None)
    assert job["status"] == "completed" and job["attempts"] == 1
    assert store.purge([job_id], None, None) == 0  # completed jobs are never purged


async def test_permanent_failures_and_deleted_prompts_dead_letter_without_retrying(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    add_prompt(db_engine)
    prompt_job = enqueue(
        db_engine,
        config,
        "acme",
        {
            "feature": "summary",
            "prompt": {"name": "summarize", "variables": {"ticket": 1, "who": 2}},
        },
    ).job["id"]
    with session_scope(db_engine) as session:  # the prompt is deleted after enqueue
        session.connection().execute(PromptLabel.__table__.delete())  # type: ignore[attr-defined]
        session.connection().execute(PromptVersion.__table__.delete())  # type: ignore[attr-defined]
    sim.configure({"seed": 1, "default": {"errors": {400: 1.0}}})
    bad_request = enqueue(db_engine, config, "acme", job_body()).job["id"]
    stats = await worker().run(until_empty=True)
    assert (stats.dead, stats.retried) == (2, 0)
    gone = get_job(db_engine, prompt_job, tenant_id=None)
    assert gone["status"] == "dead" and gone["attempts"] == 1
    assert "unknown prompt 'summarize'" in gone["error"]
    refused = get_job(db_engine, bad_request, tenant_id=None)
    assert refused["status"] == "dead" and refused["attempts"] == 1
    assert sim.stats()["total"] == 1  # the deleted prompt never reached the provider


async def test_a_job_whose_call_returned_before_its_worker_died_completes_from_the_log(
    db_engine: Engine,
    config: GatewayConfig,
    worker: Callable[..., QueueWorker],
    make_gateway: Callable[..., Gateway],
    sim: SimServer,
) -> None:
    job_id = enqueue(db_engine, config, "acme", job_body()).job["id"]
    store = JobStore(db_engine)
    [claimed] = store.claim("dead-worker", 10, 60, utcnow())
    # The dead worker's call returned (and was logged) but its transition never ran.
    answered = await make_gateway(config).chat(
        ChatRequest("acme", "summary", job_body()["messages"], "fast", job_id=job_id)
    )
    with db_engine.begin() as conn:  # its lease runs out
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    stats = await worker().run(until_empty=True)
    job = get_job(db_engine, job_id, tenant_id=None)
    assert (stats.recovered, stats.completed) == (0 + 1, 1)
    assert job["status"] == "completed" and job["request_id"] == answered.request_id
    assert job["result"]["recovered"] is True and job["result"]["text"] == answered.text
    assert Decimal(job["cost_usd"]) == answered.cost_usd
    assert [h["outcome"] for h in job["history"]] == ["lease_expired", "recovered"]
    assert sim.stats()["total"] == 1 and len(ok_rows(db_engine, job_id)) == 1
    # The dead worker's late write is fenced off.
    assert store.apply([_complete(claimed)]) == [False]


def _complete(claimed: Any) -> Any:
    from llmops.queue.store import Transition

    return Transition(claimed, "completed", {"result": {"text": "late"}})


async def test_graceful_stop_releases_in_flight_jobs_without_using_an_attempt(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    sim.configure({"seed": 1, "default": {"ttft_ms": 5000}})
    ids = [enqueue(db_engine, config, "acme", job_body(i)).job["id"] for i in range(4)]
    w = worker()
    running = asyncio.create_task(w.run(grace_s=0.2))
    while w.stats.claimed < 4:
        await asyncio.sleep(0.02)
    w.stop()
    stats = await running
    assert (stats.released, stats.ended) == (4, "stopped")
    for job_id in ids:
        job = get_job(db_engine, job_id, tenant_id=None)
        assert (job["status"], job["attempts"]) == ("queued", 0)


# -- claims ---------------------------------------------------------------------------


def _bulk(engine: Engine, tenant: str, n: int, priority: int = 0) -> list[str]:
    now = utcnow()
    rows = [
        {
            "id": new_id("job"),
            "tenant_id": tenant,
            "feature_id": "summary",
            "status": "queued",
            "priority": priority,
            "payload": {"messages": [], "model_group": "fast"},
            "attempts": 0,
            "max_attempts": 3,
            "cost_usd": Decimal(0),
            "callback_attempts": 0,
            "history": [],
            "created_at": now + timedelta(microseconds=i),
            "updated_at": now,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(insert(JOBS), rows)
    return [row["id"] for row in rows]


def test_a_high_priority_job_and_another_tenants_job_are_in_the_next_batch(
    db_engine: Engine, keys: Any
) -> None:
    backlog = _bulk(db_engine, "acme", 5000)
    [urgent] = _bulk(db_engine, "acme", 1, priority=10)
    [single] = _bulk(db_engine, "globex", 1)
    store = JobStore(db_engine)
    batch = store.claim("w1", 50, 60, utcnow())
    ids = [job.id for job in batch]
    assert len(ids) == 50 and urgent in ids and single in ids
    assert ids[:2] == [urgent, single]  # each tenant's first turn, higher priority first
    assert ids[2:] == backlog[:48]  # then acme's backlog, oldest first


def test_concurrent_claims_never_hand_out_a_job_twice(db_engine: Engine, keys: Any) -> None:
    _bulk(db_engine, "acme", 300)
    _bulk(db_engine, "globex", 300)
    store = JobStore(db_engine)
    claimed: list[list[str]] = []
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        mine: list[str] = []
        try:
            while batch := store.claim(name, 25, 60, utcnow()):
                mine += [job.id for job in batch]
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        claimed.append(mine)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    every = [job_id for mine in claimed for job_id in mine]
    assert len(every) == len(set(every)) == 600
    with db_engine.connect() as conn:
        assert conn.execute(select(func.max(JOBS.c.attempts))).scalar() == 1


def test_a_group_commit_skips_a_lost_lease_and_records_the_others_outcomes(
    db_engine: Engine, keys: Any
) -> None:
    from sqlmodel import Session

    from llmops.metering.actions import record_action_outcome
    from llmops.queue.store import Transition

    _bulk(db_engine, "acme", 3)
    store = JobStore(db_engine)
    mine = store.claim("w1", 3, 60, utcnow())
    lost, done, posted = mine
    with db_engine.begin() as conn:  # w1 stalls: its lease of the first job runs out
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == lost.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert [job.id for job in store.claim("w2", 3, 60, utcnow())] == [lost.id]
    with Session(db_engine) as session:  # the app already said how the third action went
        record_action_outcome(session, "acme", posted.id, "failure", "api")
        session.commit()
    assert store.heartbeat("w1", mine, 60) == 2  # only the leases w1 still holds

    values = {"result": {"text": "hi"}, "request_id": None, "cost_usd": Decimal("0.01")}
    changes = [Transition(job, "completed", {**values, "history": []}) for job in mine]
    assert store.apply(changes) == [False, True, True]
    with db_engine.connect() as conn:
        rows = conn.execute(select(JOBS.c.id, JOBS.c.status, JOBS.c.lease_owner)).all()
        outcomes = set(
            conn.execute(
                select(
                    ActionOutcome.action_id,  # type: ignore[arg-type]
                    ActionOutcome.outcome,  # type: ignore[arg-type]
                    ActionOutcome.job_id,  # type: ignore[arg-type]
                )
            ).all()
        )
    assert {row[0]: (row[1], row[2]) for row in rows} == {
        lost.id: ("running", "w2"),
        done.id: ("completed", None),
        posted.id: ("completed", None),
    }
    # Outcomes are final: the posted failure stays; the lost lease records nothing.
    assert outcomes == {(done.id, "success", done.id), (posted.id, "failure", None)}
    assert store.apply(changes[1:]) == [False, False]  # a repeated write changes nothing


# -- callbacks ------------------------------------------------------------------------


async def test_completion_posts_a_signed_callback_retried_until_delivered(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker]
) -> None:
    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-LLMOps-Signature"]))
        return web.Response(status=500 if len(received) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://127.0.0.1:{port}/hook"
        job_id = enqueue(db_engine, config, "acme", job_body(callback_url=url)).job["id"]
        secret = ensure_secret(db_engine, "acme")
        w = worker()
        with db_engine.begin() as conn:  # retry the failed delivery at once
            conn.execute(update(JOBS).values(callback_next_at=utcnow()))
        running = asyncio.create_task(w.run())
        for _ in range(400):
            job = get_job(db_engine, job_id, tenant_id=None)
            if job["callback"]["status"] == "pending" and job["callback"]["attempts"] == 1:
                with db_engine.begin() as conn:
                    conn.execute(update(JOBS).values(callback_next_at=utcnow()))
                w._callbacks_wake.set()
            if job["callback"]["status"] == "delivered":
                break
            await asyncio.sleep(0.05)
        w.stop()
        await running
    finally:
        await runner.cleanup()
    job = get_job(db_engine, job_id, tenant_id=None)
    assert job["callback"]["status"] == "delivered" and job["callback"]["attempts"] == 2
    assert job["callback"]["http_status"] == 204
    assert len(received) == 2
    body, signature = received[-1]
    assert verify(secret, body, signature)
    assert not verify(secret, body + b" ", signature)
    import json

    event = json.loads(body)
    assert event["type"] == "job.completed" and event["job"]["id"] == job_id
    assert event["job"]["result"]["text"]


# -- budgets --------------------------------------------------------------------------


async def test_a_cap_full_of_holds_retries_but_a_spent_cap_dead_letters(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    from llmops.gateway.budget import BudgetManager

    budgets = BudgetManager(db_engine)
    budgets.set_cap(
        tenant_id="acme", feature_id=None, limit_usd=Decimal("0.01"), period="day", mode="hard"
    )
    held = budgets.reserve(
        request_id="other-call", tenant_id="acme", feature_id="summary", amount_usd=Decimal("0.01")
    )
    job_id = enqueue(db_engine, config, "acme", job_body(max_attempts=5)).job["id"]
    w = worker(retry_base_s=0.2, retry_max_s=0.2)
    running = asyncio.create_task(w.run(until_empty=True))
    while w.stats.retried == 0:  # refused while another call's hold fills the cap
        await asyncio.sleep(0.02)
    budgets.release(held)
    stats = await running
    job = get_job(db_engine, job_id, tenant_id=None)
    assert job["status"] == "completed" and stats.retried >= 1
    assert job["history"][0]["error_class"] == "budget_exceeded"
    assert job["history"][0]["retryable"] is True
    await w.gateway.aclose()  # this worker is done: its lease of cap headroom goes back

    [cap] = budgets.list_caps()
    rest = cap.remaining_usd
    spent = budgets.reserve(
        request_id="spent-call", tenant_id="acme", feature_id="summary", amount_usd=rest
    )
    budgets.settle(spent, rest)  # now the cap is spent, not merely held
    doomed = enqueue(db_engine, config, "acme", job_body(max_attempts=5)).job["id"]
    stats = await worker().run(until_empty=True)
    job = get_job(db_engine, doomed, tenant_id=None)
    assert (job["status"], job["attempts"], stats.retried) == ("dead", 1, 0)
    assert "budget_exceeded" in job["error"]


async def test_a_job_waits_for_its_not_before_time(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker]
) -> None:
    later = (utcnow() + timedelta(hours=1)).isoformat()
    scheduled = enqueue(db_engine, config, "acme", job_body(1, not_before=later)).job["id"]
    now_job = enqueue(db_engine, config, "acme", job_body(2)).job["id"]
    stats = await worker().run(until_empty=True)
    assert (stats.claimed, stats.ended) == (1, "empty")
    assert get_job(db_engine, now_job, tenant_id=None)["status"] == "completed"
    waiting = get_job(db_engine, scheduled, tenant_id=None)
    assert (waiting["status"], waiting["attempts"]) == ("queued", 0)


async def test_each_job_attempt_is_a_span(
    db_engine: Engine,
    config: GatewayConfig,
    worker: Callable[..., QueueWorker],
    sim: SimServer,
    span_exporter: Any,
) -> None:
    job_id = enqueue(db_engine, config, "acme", job_body()).job["id"]
    await worker().run(until_empty=True)
    spans = [s for s in span_exporter.get_finished_spans() if s.name.startswith("job ")]
    [span] = [s for s in spans if dict(s.attributes or {})["llmops.job_id"] == job_id]
    attrs = dict(span.attributes or {})
    assert attrs["llmops.tenant_id"] == "acme" and attrs["llmops.job.attempt"] == 1


async def test_worker_metrics_are_served_while_it_runs(
    db_engine: Engine, config: GatewayConfig, worker: Callable[..., QueueWorker], sim: SimServer
) -> None:
    import socket

    from llmops.telemetry.metrics import serve_worker_metrics

    for i in range(3):
        enqueue(db_engine, config, "acme", job_body(i))
    running = worker()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = serve_worker_metrics(running, db_engine, port, host="127.0.0.1")
    try:
        await running.run(until_empty=True)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        stop()
    assert 'llmops_worker_jobs_total{outcome="completed"} 3.0' in text
    assert "llmops_worker_claimed_total 3.0" in text
    assert "llmops_worker_in_flight 0.0" in text
    assert "llmops_ops_metrics_errors_total 0.0" in text
