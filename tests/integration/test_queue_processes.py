"""The queue as a user meets it: HTTP over uvicorn, the ``llmops jobs`` CLI, and worker
processes that are killed (SIGKILL) or stopped (SIGTERM) mid-batch, on SQLite and Postgres."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from llmops.db.engine import make_engine, session_scope
from llmops.db.models import Feature, Job, RequestLog
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import Gateway
from llmops.gateway.http import create_app
from llmops.queue import QueueWorker, enqueue, get_job
from llmops.sim import SimConfig, SimServer
from llmops.tenants import create_tenant

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
MESSAGES = [{"role": "user", "content": "Summarize: the export button does nothing."}]


def _config(base_url: str) -> GatewayConfig:
    deployment = {"id": "sim-mini", "model": "openai/gpt-4o-mini", "api_base": base_url}
    deployment["api_key"] = "sk-sim"
    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 10, "num_retries": 0},
            "model_groups": {"fast": {"deployments": [deployment]}},
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}
            ],
        }
    )


@pytest.fixture
def sim() -> Iterator[SimServer]:
    zero = {"ttft_ms": 0, "tokens_per_s": 0}
    with SimServer(SimConfig.model_validate({"seed": 2, "default": zero})) as server:
        yield server


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _seed(engine: Engine) -> dict[str, str]:
    keys = {t: create_tenant(engine, t, t.title())[1] for t in ("acme", "globex")}
    with session_scope(engine) as session:
        session.add(Feature(id="summary", default_model_group="fast"))
    return keys


async def test_http_submit_and_status_only_for_the_owner(
    db_engine: Engine, sim: SimServer, make_gateway: Callable[..., Gateway]
) -> None:
    keys = _seed(db_engine)
    config = _config(sim.base_url)
    gateway = make_gateway(config)
    acme = {"Authorization": f"Bearer {keys['acme']}"}
    globex = {"Authorization": f"Bearer {keys['globex']}"}
    body = {"messages": MESSAGES, "priority": 3}
    with serve(create_app(gateway, db_engine)) as base, httpx.Client(base_url=base) as client:
        assert client.post("/v1/jobs", json=body).status_code == 401
        headers = {**acme, "X-LLMOps-Feature": "summary", "Idempotency-Key": "order-7"}
        created = client.post("/v1/jobs", json=body, headers=headers)
        assert created.status_code == 201, created.text
        job = created.json()
        assert created.headers["location"] == f"/v1/jobs/{job['id']}"
        assert (job["status"], job["priority"], job["action_id"]) == ("queued", 3, job["id"])
        again = client.post("/v1/jobs", json=body, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == job["id"]

        bad = client.post("/v1/jobs", json={"feature": "nope", "messages": MESSAGES}, headers=acme)
        assert bad.status_code == 400
        assert "unknown feature 'nope'" in bad.json()["error"]["message"]
        not_json = client.post("/v1/jobs", content=b"{", headers=acme)
        assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]
        hook = {"feature": "summary", "messages": MESSAGES, "callback_url": "file:///etc/x"}
        assert client.post("/v1/jobs", json=hook, headers=acme).status_code == 400

        assert client.get(f"/v1/jobs/{job['id']}", headers=globex).status_code == 404
        assert client.get("/v1/jobs/job_missing", headers=acme).status_code == 404
        stats = await QueueWorker(db_engine, gateway, poll_s=0.05).run(until_empty=True)
        assert stats.completed == 1
        done = client.get(f"/v1/jobs/{job['id']}", headers=acme).json()
    assert done["status"] == "completed" and done["attempts"] == 1
    assert done["result"]["text"] and Decimal(done["cost_usd"]) > 0
    assert done["history"][0]["outcome"] == "ok"


@pytest.fixture
def user_env(
    cli_env: Callable[[str], dict[str, str]], sim: SimServer, db_url: str
) -> dict[str, str]:
    env = cli_env(sim.base_url)
    env["LLMOPS_DATABASE_URL"] = db_url
    env["LLMOPS_QUEUE_LEASE_S"] = "2"
    env["LLMOPS_QUEUE_RETRY_BASE_S"] = "0.05"
    return env


@pytest.fixture
def ops_db(user_env: dict[str, str], run_llmops: Runner) -> Iterator[Engine]:
    init = run_llmops(user_env, "init")
    assert init.returncode == 0, init.stderr
    engine = make_engine(user_env["LLMOPS_DATABASE_URL"])
    _seed(engine)
    yield engine
    engine.dispose()


def test_cli_submit_work_status_and_the_dead_letter_queue(
    user_env: dict[str, str], ops_db: Engine, run_llmops: Runner, sim: SimServer
) -> None:
    submit = run_llmops(
        user_env, "jobs", "submit", "--tenant", "acme", "--feature", "summary",
        "--message", "Summarize: login fails.", "--priority", "2",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    job = json.loads(submit.stdout)
    refused = run_llmops(
        user_env, "jobs", "submit", "--tenant", "acme", "--feature", "summary",
        "--prompt", "nope",
    )  # fmt: skip
    assert refused.returncode == 1 and "unknown prompt 'nope'" in refused.stderr

    worked = run_llmops(user_env, "jobs", "work", "--until-empty")
    assert worked.returncode == 0, worked.stderr
    assert json.loads(worked.stdout)["completed"] == 1
    status = json.loads(run_llmops(user_env, "jobs", "status", job["id"]).stdout)
    assert status["status"] == "completed" and status["result"]["text"]

    sim.configure({"seed": 2, "default": {"errors": {503: 1.0}}})
    doomed = [
        json.loads(
            run_llmops(
                user_env, "jobs", "submit", "--tenant", "globex", "--feature", "summary",
                "--message", f"hi {i}", "--max-attempts", "2",
            ).stdout
        )["id"]
        for i in range(2)
    ]  # fmt: skip
    assert run_llmops(user_env, "jobs", "work", "--until-empty").returncode == 0
    listed = run_llmops(user_env, "jobs", "dlq", "list")
    assert all(job_id in listed.stdout for job_id in doomed) and "attempts=2" in listed.stdout
    shown = json.loads(run_llmops(user_env, "jobs", "dlq", "show", doomed[0]).stdout)
    assert shown["status"] == "dead" and len(shown["history"]) == 2
    assert "gave up after 2 attempts" in shown["error"]

    replayed = run_llmops(user_env, "jobs", "dlq", "replay", doomed[0])
    assert "replayed 1 job(s)" in replayed.stdout
    again = run_llmops(user_env, "jobs", "dlq", "replay", doomed[0])
    assert "replayed 0 job(s)" in again.stdout and "not dead-lettered" in again.stdout
    purged = run_llmops(user_env, "jobs", "dlq", "purge", "--all")
    assert "purged 1 dead job(s)" in purged.stdout  # the replayed one is queued, kept
    assert "no dead-lettered jobs" in run_llmops(user_env, "jobs", "dlq", "list").stdout
    assert get_job(ops_db, doomed[0], tenant_id=None)["status"] == "queued"
    secret = run_llmops(user_env, "jobs", "callback-secret", "--tenant", "acme")
    assert secret.returncode == 0 and secret.stdout.startswith("whsec_")


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(LLMOPS_BIN), "jobs", "work", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


LLMOPS_BIN = Path(__import__("sys").executable).parent / "llmops"


def _count(engine: Engine, status: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(Job).where(Job.status == status)).scalar()
            or 0
        )


def _enqueue_many(engine: Engine, base_url: str, n: int) -> list[str]:
    config = _config(base_url)
    return [
        enqueue(
            engine,
            config,
            "acme" if i % 3 else "globex",
            {"feature": "summary", "messages": [{"role": "user", "content": f"Job {i}"}]},
        ).job["id"]
        for i in range(n)
    ]


def test_sigkill_mid_batch_then_a_new_worker_completes_every_job_exactly_once(
    user_env: dict[str, str], ops_db: Engine, sim: SimServer
) -> None:
    sim.configure({"seed": 2, "default": {"ttft_ms": 400, "tokens_per_s": 0}})
    ids = _enqueue_many(ops_db, sim.base_url, 120)
    first = _worker(user_env, "--concurrency", "30", "--batch-size", "10")
    deadline = time.monotonic() + 120
    while _count(ops_db, "completed") < 30:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_running = _count(ops_db, "running")
    assert killed_running > 0  # it died holding leases
    second = _worker(user_env, "--until-empty", "--concurrency", "30")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert _count(ops_db, "completed") == len(ids)

    with ops_db.connect() as conn:
        rows = conn.execute(
            select(RequestLog.job_id, RequestLog.status, RequestLog.cost_usd)  # type: ignore[call-overload]
        ).all()
    ok_by_job: dict[str, list[Decimal]] = {}
    for job_id, status, cost in rows:
        if status == "ok":
            ok_by_job.setdefault(job_id, []).append(cost)
    assert set(ok_by_job) == set(ids)
    assert all(len(costs) == 1 for costs in ok_by_job.values())  # billed once each
    lost = 0
    for job_id in ids:
        job = get_job(ops_db, job_id, tenant_id=None)
        assert Decimal(job["cost_usd"]) == ok_by_job[job_id][0]
        outcomes = [h["outcome"] for h in job["history"]]
        assert outcomes[-1] in ("ok", "recovered")
        lost += outcomes.count("lease_expired")
    assert lost == killed_running
    assert json.loads(out)["claimed"] >= killed_running


def test_sigterm_releases_in_flight_jobs_and_exits_cleanly(
    user_env: dict[str, str], ops_db: Engine, sim: SimServer
) -> None:
    sim.configure({"seed": 2, "default": {"ttft_ms": 20_000}})
    ids = _enqueue_many(ops_db, sim.base_url, 6)
    worker = _worker(user_env, "--grace-s", "0.5")
    deadline = time.monotonic() + 60
    while _count(ops_db, "running") < len(ids):
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    stats = json.loads(out)
    assert (stats["released"], stats["ended"]) == (len(ids), "stopped")
    for job_id in ids:
        job = get_job(ops_db, job_id, tenant_id=None)
        assert (job["status"], job["attempts"]) == ("queued", 0)
