"""Queue throughput: jobs/s through queue workers against a bare Router loop, in one run.

Starts the provider simulator (``llmops sim serve``, fixed latency ``--latency-ms``, 100)
in its own process, then measures, in this order:

1. baseline: a bare ``litellm.Router.acompletion`` loop at ``--concurrency`` (50) calls
   in flight, for ``--jobs`` (10,000) calls: what the provider and LiteLLM allow;
2. on each backend, the gateway core without the queue: one process calling
   ``Gateway.chat`` ``--jobs`` times at the same concurrency, to tell what the queue
   costs from what the core (request log, rate limiter, budgets) costs;
3. on SQLite (a file in a temp dir), then on Postgres when LLMOPS_TEST_DATABASE_URL is
   set (an admin URL: a database is created for the run and dropped after):
   ``--jobs`` jobs enqueued, then drained by 1 worker process and again by 2 worker
   processes, each at the baseline's concurrency, through the full gateway core (request
   log, rate limiter, budgets) as ``llmops jobs work`` runs it.

Worker processes import everything, build their gateway and warm it up, then wait for a
common start signal, so interpreter and LiteLLM start-up are not timed; the time is from
the signal to the last job's terminal state. Prints a table of jobs/s and ratios (one
worker to the baseline; two workers to one) and, as its last line, one JSON object with
every figure, including the CPU time each worker process used per job (from the signal
to its end, all of its threads; a Postgres server's own CPU is not in it), which is
steadier than jobs/s on a busy machine. Not a test: nothing asserts timings. On a shared
or small machine (two cores here, other work running) figures are noisy, and two worker
processes plus the simulator and the database compete for the same cores.

    uv run python bench/queue_throughput.py [--jobs 10000] [--concurrency 50] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
LLMOPS = Path(sys.executable).parent / "llmops"
PRICES = [{"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gateway_yaml(folder: Path, base_url: str) -> Path:
    deployment = {"id": "sim-mini", "model": "openai/gpt-4o-mini", "api_base": base_url}
    deployment["api_key"] = "sk-sim"
    config = {
        "settings": {"timeout_s": 30, "num_retries": 0},
        "model_groups": {"fast": {"deployments": [deployment]}},
        "prices": PRICES,
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start_sim(folder: Path, latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    sim_yaml = folder / "sim.yaml"
    profile = {"ttft_ms": latency_ms, "tokens_per_s": 0, "max_output_tokens": 16}
    sim_yaml.write_text(yaml.safe_dump({"seed": 1, "default": profile}))
    port = _free_port()
    proc = subprocess.Popen(
        [str(LLMOPS), "sim", "serve", "--port", str(port), "--config", str(sim_yaml)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1).close()
            return proc, f"{base}/v1"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the simulator did not start") from None
            time.sleep(0.1)


# -- baseline -------------------------------------------------------------------------


async def _baseline(gateway_yaml: Path, jobs: int, concurrency: int) -> float:
    from llmops.gateway.config import load_gateway_config
    from llmops.gateway.router import build_router

    router = build_router(load_gateway_config(gateway_yaml))
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await router.acompletion(
                model="fast",
                messages=[{"role": "user", "content": f"Summarize ticket {i}."}],
                max_tokens=16,
            )

    await asyncio.gather(*(one(i) for i in range(min(jobs, 100))))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    return jobs / (time.perf_counter() - started)


# -- the queue ------------------------------------------------------------------------


def _prepare_db(url: str, jobs: int) -> None:
    from sqlalchemy import delete, insert

    from llmops.db.engine import make_engine, session_scope
    from llmops.db.migrate import upgrade
    from llmops.db.models import Feature, RequestLog, Tenant
    from llmops.ids import new_id, utcnow
    from llmops.queue.store import JOBS
    from llmops.tenants import create_tenant

    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(JOBS))
            conn.execute(delete(RequestLog.__table__))  # type: ignore[attr-defined]
        with session_scope(engine) as session:
            known = session.get(Tenant, "acme") is not None
        if not known:
            for tenant in ("acme", "globex"):
                create_tenant(engine, tenant, tenant)
            with session_scope(engine) as session:
                session.add(Feature(id="summary", default_model_group="fast"))
        now = utcnow()
        rows = [
            {
                "id": new_id("job"),
                "tenant_id": "acme" if i % 4 else "globex",
                "feature_id": "summary",
                "status": "queued",
                "priority": 0,
                "payload": {
                    "messages": [{"role": "user", "content": f"Summarize ticket {i}."}],
                    "model_group": "fast",
                    "max_tokens": 16,
                },
                "attempts": 0,
                "max_attempts": 3,
                "cost_usd": Decimal(0),
                "callback_attempts": 0,
                "history": [],
                "created_at": now,
                "updated_at": now,
            }
            for i in range(jobs)
        ]
        with engine.begin() as conn:
            for start in range(0, len(rows), 2000):
                conn.execute(insert(JOBS), rows[start : start + 2000])
    finally:
        engine.dispose()


def _drain(
    env: dict[str, str],
    workers: int,
    concurrency: int,
    batch: int,
    folder: Path,
    core_calls: int = 0,
) -> Any:
    """Run ``workers`` worker processes from a common start; (seconds, their stats).

    With ``core_calls``, one process calls ``Gateway.chat`` that many times instead (the
    gateway core without the queue, at the same concurrency)."""
    signals = folder / f"signals-{secrets.token_hex(4)}"
    signals.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(signals),
                str(concurrency),
                str(batch),
                str(core_calls),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    deadline = time.monotonic() + 180
    while len(list(signals.glob("ready-*"))) < workers:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a worker did not start: {procs[0].communicate()[1][-2000:]}")
        time.sleep(0.05)
    started = time.time()
    (signals / "go").touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return max(r["finished_at"] for r in results) - started, results


def _worker_main(signals: Path, concurrency: int, batch: int, core_calls: int) -> None:
    from llmops.settings import apply_offline_env, get_settings

    apply_offline_env()
    from llmops.db.engine import engine_from_settings
    from llmops.gateway.core import ChatRequest, Gateway
    from llmops.queue.worker import QueueWorker

    async def main() -> dict[str, Any]:
        settings = get_settings()
        engine = engine_from_settings(settings)
        gateway = Gateway.from_settings(settings, engine)
        message = [{"role": "user", "content": "warm up"}]
        await asyncio.gather(
            *(gateway.chat(ChatRequest("acme", "summary", message, "fast")) for _ in range(20))
        )
        worker = QueueWorker.from_settings(
            settings, engine, gateway, concurrency=concurrency, batch_size=batch, poll_s=0.05
        )
        (signals / f"ready-{os.getpid()}").touch()
        while not (signals / "go").exists():
            await asyncio.sleep(0.005)
        cpu_started = time.process_time()
        if core_calls:
            sem = asyncio.Semaphore(concurrency)

            async def call(i: int) -> None:
                text = [{"role": "user", "content": f"Summarize ticket {i}."}]
                async with sem:
                    await gateway.chat(ChatRequest("acme", "summary", text, "fast", max_tokens=16))

            await asyncio.gather(*(call(i) for i in range(core_calls)))
            result: dict[str, Any] = {"completed": core_calls, "dead": 0}
        else:
            result = (await worker.run(until_empty=True)).as_dict()
        ended = time.time()
        cpu_s = time.process_time() - cpu_started
        await gateway.aclose()
        engine.dispose()
        return {**result, "finished_at": ended, "cpu_s": cpu_s}

    print(json.dumps(asyncio.run(main())))


def _postgres_db(admin_url: str) -> tuple[str, Any]:
    from sqlalchemy import make_url

    from llmops.db.engine import make_engine

    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"llmops_bench_queue_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs instead of 10,000")
    args = parser.parse_args()
    jobs = 1000 if args.quick else args.jobs

    from llmops.settings import apply_offline_env

    apply_offline_env()
    figures: dict[str, Any] = {
        "jobs": jobs,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sim, base_url = _start_sim(folder, args.latency_ms)
        try:
            gateway_yaml = _gateway_yaml(folder, base_url)
            baseline = asyncio.run(_baseline(gateway_yaml, jobs, args.concurrency))
            figures["baseline_router_jobs_s"] = round(baseline, 1)
            print(f"baseline Router.acompletion loop: {baseline:8.1f} calls/s", flush=True)
            backends = {"sqlite": f"sqlite:///{folder / 'ops.db'}"}
            drop = None
            admin = os.environ.get("LLMOPS_TEST_DATABASE_URL")
            if admin:
                backends["postgres"], drop = _postgres_db(admin)
            try:
                for backend, url in backends.items():
                    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
                    env.update(
                        LLMOPS_DATABASE_URL=url,
                        LLMOPS_GATEWAY_CONFIG=str(gateway_yaml),
                        LLMOPS_DATA_DIR=str(folder / "data"),
                    )
                    _prepare_db(url, 0)
                    seconds, stats = _drain(env, 1, args.concurrency, 1, folder, core_calls=jobs)
                    core = jobs / seconds
                    core_cpu = 1000 * stats[0]["cpu_s"] / jobs
                    print(
                        f"{backend:8s} gateway core loop: {core:8.1f} calls/s "
                        f"({core_cpu:.2f} ms CPU a call)",
                        flush=True,
                    )
                    figures[f"{backend}_core_calls_s"] = round(core, 1)
                    figures[f"{backend}_core_cpu_ms"] = round(core_cpu, 2)
                    rates = {}
                    for workers in (1, 2):
                        _prepare_db(url, jobs)
                        seconds, stats = _drain(
                            env, workers, args.concurrency, args.batch_size, folder
                        )
                        done = sum(s["completed"] for s in stats)
                        rates[workers] = done / seconds
                        cpu = 1000 * sum(s["cpu_s"] for s in stats) / max(done, 1)
                        print(
                            f"{backend:8s} {workers} worker(s): {rates[workers]:8.1f} jobs/s "
                            f"({done} completed, {sum(s['dead'] for s in stats)} dead, "
                            f"{seconds:.1f} s, {cpu:.2f} ms CPU a job)",
                            flush=True,
                        )
                        figures[f"{backend}_{workers}w_cpu_ms"] = round(cpu, 2)
                        figures[f"{backend}_{workers}w_jobs_s"] = round(rates[workers], 1)
                        figures[f"{backend}_{workers}w_completed"] = done
                    figures[f"{backend}_core_vs_baseline"] = round(core / baseline, 3)
                    figures[f"{backend}_1w_vs_core"] = round(rates[1] / core, 3)
                    figures[f"{backend}_1w_vs_baseline"] = round(rates[1] / baseline, 3)
                    figures[f"{backend}_2w_vs_1w"] = round(rates[2] / rates[1], 3)
            finally:
                if drop is not None:
                    drop()
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    print()
    print(f"{'':24s} {'jobs/s':>9s} {'ratio':>8s}")
    print(f"{'baseline (bare Router)':24s} {figures['baseline_router_jobs_s']:9.1f} {1:8.2f}")
    for backend in ("sqlite", "postgres"):
        if f"{backend}_1w_jobs_s" not in figures:
            continue
        one, two = figures[f"{backend}_1w_jobs_s"], figures[f"{backend}_2w_jobs_s"]
        core = figures[f"{backend}_core_calls_s"]
        print(
            f"{backend + ' core, no queue':24s} {core:9.1f} {core / baseline:8.2f}  (vs baseline)"
        )
        print(
            f"{backend + ' 1 worker':24s} {one:9.1f} {one / baseline:8.2f}  (vs baseline; "
            f"{one / core:.2f} vs the core)"
        )
        print(f"{backend + ' 2 workers':24s} {two:9.1f} {two / one:8.2f}  (vs 1 worker)")
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker_main(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
