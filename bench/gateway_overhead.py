"""What llmops costs on top of LiteLLM's Router, in-process and over HTTP, in one run.

Starts the provider simulator (``llmops sim serve``, zero latency) and the HTTP gateway
(``llmops gateway serve``, one worker) each in its own process, so that client and
servers never share a GIL, then sends the same calls at the same concurrency through, in
this order:

1. bare httpx: one ``httpx.AsyncClient`` straight to the simulator (the wire alone);
2. bare ``litellm.Router.acompletion``: the baseline every ratio is taken against;
3. the llmops core in-process, built by ``Gateway.from_settings`` as the HTTP server
   builds it, with everything on: a hard spend cap and a rate limit on the tenant (both
   far too large to reject; each call holds and settles on them, from the process's
   lease of cap headroom and slices of the limits, as in production), the default PII
   redaction policy (the prompt carries an email address to find, mask and restore),
   and the request log (each caller waits for its row's commit, the default; the call's
   spend is booked on the cap in that same transaction). Each core call also measures
   the time it spent outside the Router: the core's own cost per call, far less
   sensitive to the machine's load than a difference of two p50s;
   then the same core with ``LLMOPS_LOG_WAIT=false`` (calls return before their row
   commits; shown for scale, the targets are checked on the defaults);
4. the llmops HTTP gateway, driven by an aiohttp client (aiohttp rather than httpx: it
   costs a tenth of the CPU per call, so the load generator never limits the gateway).

Rows 3 and 4 run on SQLite (a file in a temp dir) and again on Postgres when
LLMOPS_TEST_DATABASE_URL is set (an admin URL: the benchmark creates its own database
there and drops it after). Concurrency ``--concurrency`` (50) measures throughput and
concurrency 1 the latency a call gains. A level runs ``--rounds`` rounds (3); a round runs
every path once, in the order above, so a change in machine load hits all paths alike,
and each figure printed is the median over the rounds. Every path is warmed up before
each timed run. The last line is one JSON object with every figure, for tracking over
time. Not a test: nothing here asserts timings.

LiteLLM's callback lists are process-wide, so the bare Router runs with the core's
attempt logger registered; it acts on failures only (measured: no extra work, no extra CPU
on a successful call).

    uv run python bench/gateway_overhead.py [--calls 1000] [--concurrency 50] [--quick]
    uv run python bench/gateway_overhead.py --profile   # and where the CPU goes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import io
import json
import os
import pstats
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmops.settings import apply_offline_env

apply_offline_env()  # before anything imports LiteLLM

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import Engine, create_engine, func, make_url, select, text  # noqa: E402

from llmops.db.engine import make_engine  # noqa: E402
from llmops.db.migrate import upgrade  # noqa: E402
from llmops.db.models import RequestLog  # noqa: E402
from llmops.gateway.budget import BudgetManager  # noqa: E402
from llmops.gateway.config import GatewayConfig  # noqa: E402
from llmops.gateway.core import ChatRequest, Gateway  # noqa: E402
from llmops.gateway.redaction import RedactionPolicy, Redactor  # noqa: E402
from llmops.gateway.requestlog import RequestLogWriter  # noqa: E402
from llmops.gateway.router import build_router  # noqa: E402
from llmops.settings import Settings  # noqa: E402
from llmops.tenants import create_tenant  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "llmops"  # the console script users run
LLMOPS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "llmops"]
TENANT, FEATURE, GROUP, MODEL = "bench", "bench", "fast", "openai/gpt-4o-mini"
MESSAGES = [
    {
        "role": "user",
        "content": "Summarize for jane.doe@example.com: the export button does nothing in Firefox.",
    }
]
MAX_TOKENS = 32
#: The issue's targets, and LiteLLM's own proxy for scale (published figures, not run here).
CORE_MIN_RATIO, CORE_MAX_ADDED_MS = 0.9, 1.0
HTTP_MIN_RATIO, HTTP_MAX_ADDED_MS = 0.8, 15.0
LITELLM_PROXY_NOTE = (
    "for scale: LiteLLM's proxy 1.108 (one worker, no database) does 46-56 requests/s "
    "on a core and adds 28 ms at concurrency 1"
)

Call = Callable[[], Awaitable[None]]


async def _noop() -> None:
    return None


# -- processes and databases ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(base_url: str) -> dict[str, Any]:
    """One deployment on the simulator; a rate limit too large ever to reject."""
    return {
        "settings": {"timeout_s": 30, "num_retries": 0},
        "model_groups": {
            GROUP: {
                "deployments": [
                    {"id": "sim", "model": MODEL, "api_base": base_url, "api_key": "sk-bench"}
                ]
            }
        },
        "prices": [{"model": MODEL, "input_per_mtok": "0.15", "output_per_mtok": "0.60"}],
        # Every call takes, then settles, the tenant's rpm and tpm buckets.
        "rate_limits": {"default": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}},
        # No `redaction:` section: the default policy, on, every built-in entity masked.
    }


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # a file, not a pipe: nobody reads it while we measure
        return subprocess.Popen(args, cwd=log.parent, env=env, stdout=out, stderr=out)


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers (any status), or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh Postgres database for this run, dropped WITH (FORCE) after."""
    name = f"llmops_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Store:
    """One ops DB with the bench tenant, its key and its hard cap; the core and a server."""

    label: str  # "SQLite" | "Postgres"
    url: str
    engine: Engine
    key: str
    settings: Settings
    gateway: Gateway
    #: The same, with LLMOPS_LOG_WAIT=false: calls return before their row commits.
    gateway_no_wait: Gateway
    server: subprocess.Popen[bytes] | None = None
    server_url: str = ""


def prepare_store(label: str, url: str, config_path: Path) -> Store:
    upgrade(url)
    engine = make_engine(url)
    _, key = create_tenant(engine, TENANT, "Bench")
    BudgetManager(engine).set_cap(
        tenant_id=TENANT, feature_id=None, limit_usd=Decimal(10**6), period="month", mode="hard"
    )
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        gateway_config=config_path,
        data_dir=config_path.parent / "data",
    )
    no_wait = settings.model_copy(update={"log_wait": False})
    return Store(
        label,
        url,
        engine,
        key,
        settings,
        Gateway.from_settings(settings, engine),
        Gateway.from_settings(no_wait, engine),
    )


def start_server(store: Store, tmp: Path, config_path: Path) -> None:
    """``llmops gateway serve`` on the store's database, in its own process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env.update(
        LLMOPS_DATA_DIR=str(tmp / "data"),
        LLMOPS_DATABASE_URL=store.url,
        LLMOPS_GATEWAY_CONFIG=str(config_path),
    )
    log = tmp / f"gateway-{store.label.lower()}.log"
    store.server = spawn([*LLMOPS, "gateway", "serve", "--port", str(port)], log, env)
    store.server_url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{store.server_url}/healthz", store.server, log, timeout=120)


# -- measuring --------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) used so far by ``pid``; None: this process."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # per call, in the process doing the work


@dataclass
class BenchPath:
    key: str  # stable name in the JSON
    label: str  # name in the table
    call: Call
    store: Store | None = None  # the ops DB it writes to (core and HTTP rows)
    server: subprocess.Popen[bytes] | None = None  # whose CPU to count (HTTP rows)
    runs: dict[int, list[Run]] = field(default_factory=dict)
    #: Core rows: ms each call spent outside the Router (filled by the call itself).
    outside: list[float] = field(default_factory=list)
    #: The median of ``outside`` per round, by concurrency.
    outside_ms: dict[int, list[float]] = field(default_factory=dict)

    def summary(self, concurrency: int) -> Run:
        """The median of each figure over the rounds."""
        runs = self.runs[concurrency]
        return Run(
            statistics.median(r.calls_per_s for r in runs),
            statistics.median(r.p50_ms for r in runs),
            statistics.median(r.p99_ms for r in runs),
            statistics.median(r.cpu_ms for r in runs),
        )


def percentile(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def drive(
    call: Call, calls: int, concurrency: int, pid: int | None = None, *, warm_up: bool = True
) -> Run:
    """``calls`` calls, at most ``concurrency`` in flight, after a warm-up (not timed)."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with sem:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    if warm_up:  # fill connection pools to this concurrency, load lazy imports, fill caches
        await asyncio.gather(*(one() for _ in range(max(concurrency, 20))))
        latencies.clear()
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu0
    latencies.sort()
    return Run(
        calls / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        cpu / calls * 1000,
    )


def httpx_call(client: httpx.AsyncClient) -> Call:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": "Bearer sk-bench"}

    async def call() -> None:
        response = await client.post("/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text[:500]
        response.json()

    return call


def router_call(router: Any) -> Call:
    async def call() -> None:
        response = await router.acompletion(model=GROUP, messages=MESSAGES, max_tokens=MAX_TOKENS)
        assert response.choices[0].message.content

    return call


#: Seconds the current call spent inside ``Router.acompletion`` (set per call).
_IN_ROUTER: contextvars.ContextVar[list[float]] = contextvars.ContextVar("in_router")


class TimedRouter:
    """The gateway's Router, timing each ``acompletion`` for the call that made it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def acompletion(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.inner.acompletion(**kwargs)
        finally:
            _IN_ROUTER.get()[0] += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def core_call(gateway: Gateway, outside: list[float]) -> Call:
    """A core call; appends the ms it spent outside the Router (the core's own time,
    measured inside each call, so the machine's load shifts it far less than p50s)."""
    if not isinstance(gateway.router, TimedRouter):
        gateway.router = TimedRouter(gateway.router)

    async def call() -> None:
        in_router = [0.0]
        _IN_ROUTER.set(in_router)
        started = time.perf_counter()
        result = await gateway.chat(
            ChatRequest(TENANT, FEATURE, MESSAGES, GROUP, max_tokens=MAX_TOKENS)
        )
        outside.append((time.perf_counter() - started - in_router[0]) * 1000)
        assert result.text

    return call


def http_call(session: aiohttp.ClientSession, store: Store) -> Call:
    url = f"{store.server_url}/v1/chat/completions"
    body = {"model": GROUP, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {store.key}", "X-LLMOps-Feature": FEATURE}

    async def call() -> None:
        async with session.post(url, json=body, headers=headers) as response:
            payload = await response.read()
            assert response.status == 200, payload[:500]

    return call


def log_counts(store: Store) -> dict[str, int]:
    """request_log rows by status: every call through the core or the gateway left one."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(RequestLog.status, func.count()).group_by(RequestLog.status))
        return {status: int(n) for status, n in rows}


# -- profiling (--profile) ---------------------------------------------------------------


async def profile(paths: list[BenchPath], calls: int, levels: list[int]) -> str:
    """cProfile of the Router and core rows at each level, worker threads included."""
    out = io.StringIO()
    for concurrency in levels:
        for path in paths:
            if path.key == "router" or path.key.startswith("core_"):
                n = calls if concurrency > 1 else max(calls // 3, 50)
                out.write(f"\n## profile: {path.label}, {n} calls at concurrency {concurrency}\n")
                out.write(await profile_one(path.call, n, concurrency))
    return out.getvalue()


async def profile_one(call: Call, calls: int, concurrency: int) -> str:
    """One profiled run: the event-loop thread and every ``asyncio.to_thread`` worker."""
    loop = asyncio.get_running_loop()
    workers: list[cProfile.Profile] = []

    def profile_worker() -> None:  # runs first in each executor thread
        profiler = cProfile.Profile()
        workers.append(profiler)
        profiler.enable()

    executor = ThreadPoolExecutor(initializer=profile_worker, thread_name_prefix="profiled")
    loop.set_default_executor(executor)
    await drive(call, min(calls, 100), concurrency)  # warm up, and start the workers
    for profiler in workers:
        profiler.clear()  # forget the warm-up; the hooks stay on
    thread0, cpu0 = time.thread_time(), time.process_time()
    main = cProfile.Profile()
    main.enable()
    await drive(call, calls, concurrency, warm_up=False)
    main.disable()
    thread_ms = (time.thread_time() - thread0) / calls * 1000
    cpu_ms = (time.process_time() - cpu0) / calls * 1000
    executor.shutdown(wait=True)  # the threads end, and their hooks with them
    loop.set_default_executor(ThreadPoolExecutor())
    out = io.StringIO()
    out.write(
        f"CPU {cpu_ms:.2f} ms/call with the profiler on: event-loop thread {thread_ms:.2f}, "
        f"worker threads {cpu_ms - thread_ms:.2f}\n"
    )
    stats = pstats.Stats(main, stream=out)
    for profiler in workers:
        stats.add(profiler)
    # Cumulative time includes waiting for the SQLite write lock inside worker threads.
    own = sorted(
        (
            (ct, nc, f"{Path(file).name}:{line}({name})")
            for (file, line, name), (_, nc, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
            if "/llmops/" in file and "/site-packages/" not in file
        ),
        reverse=True,
    )
    out.write("\nllmops functions, cumulative ms per call (coroutines: between awaits only)\n")
    for ct, nc, where in own[:25]:
        out.write(f"  {ct / calls * 1000:8.3f}  {nc:>7}  {where}\n")
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


async def step_costs(store: Store, n: int = 300) -> list[str]:
    """What each step of the core costs alone, called back to back (ms per call)."""
    gateway = Gateway.from_settings(store.settings, store.engine)
    redactor = Redactor(RedactionPolicy())
    rules = gateway.config.rate_limits.rules_for(TENANT, FEATURE)
    writer = RequestLogWriter(store.engine)
    with store.engine.connect() as conn:  # a real row of this run, to copy
        row = dict(conn.execute(select(RequestLog)).mappings().first() or {})
    row.pop("id", None)

    async def timed(label: str, step: Callable[[int], Awaitable[None] | None]) -> str:
        started = time.perf_counter()
        for i in range(n):
            pending = step(i)
            if pending is not None:
                await pending
        return f"| {label} | {(time.perf_counter() - started) / n * 1000:.3f} |"

    def redact(_: int) -> None:
        redaction = redactor.redact_messages(MESSAGES)
        redaction.restore(str(redaction.messages[0]["content"]))

    def count_tokens(_: int) -> None:
        import litellm

        litellm.token_counter(model=MODEL, messages=MESSAGES)

    async def rate_limit(_: int) -> None:
        permit = await gateway.limiter.acquire(rules, tokens=100)
        await gateway.limiter.settle(permit, actual_tokens=40)

    async def rate_limit_per_call(_: int) -> None:
        shared = gateway.limiter.shared  # type: ignore[attr-defined]
        permit = await shared.acquire(rules, tokens=100)
        await shared.settle(permit, actual_tokens=40)

    async def lease(_: int) -> None:
        hold = await gateway.leases.hold(TENANT, FEATURE, Decimal("0.0001"))
        gateway.leases.settle(hold, Decimal("0.00001"))

    def spend_cap(i: int) -> None:
        held = gateway.budgets.reserve(
            request_id=f"step_{i}_{secrets.token_hex(4)}",
            tenant_id=TENANT,
            feature_id=FEATURE,
            amount_usd=Decimal("0.0001"),
        )
        gateway.budgets.settle(held, Decimal("0.00001"))

    def log_row(i: int) -> None:
        writer.write_now([{**row, "request_id": f"step_{i}_{secrets.token_hex(4)}"}])

    lines = [
        f"\neach step alone on {store.label}, {n} times back to back (ms per call):",
        "",
        "| step | ms |",
        "|---|---:|",
        await timed("redact + restore (default policy)", redact),
        await timed("count input tokens (litellm.token_counter)", count_tokens),
        await timed("rate limits from the process's slices (as the gateway does)", rate_limit),
        await timed("rate limits per call: acquire + settle (2 transactions)", rate_limit_per_call),
        await timed("spend cap from the process's lease (as the gateway does)", lease),
        await timed("spend cap per call: reserve + settle (2 transactions)", spend_cap),
        await timed("request_log: one row, one commit", log_row),
    ]
    await gateway.aclose()
    return lines


# -- the run ----------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    admin_url = os.environ.get("LLMOPS_TEST_DATABASE_URL")
    # The core here and the server's are configured only by what this script sets, alike.
    for name in [n for n in os.environ if n.startswith("LLMOPS_")]:
        del os.environ[name]
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmp, True)
        (tmp / "sim.yaml").write_text("default: {ttft_ms: 0, tokens_per_s: 0}\n")
        sim_port = free_port()
        sim_log = tmp / "sim.log"
        sim = spawn(
            [*LLMOPS, "sim", "serve", "--port", str(sim_port), "--config", "sim.yaml"], sim_log
        )
        cleanup.callback(stop, sim)
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_until_up(f"{sim_url}/v1/models", sim, sim_log, timeout=60)
        config = gateway_config(f"{sim_url}/v1")
        config_path = tmp / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))

        urls = [("SQLite", f"sqlite:///{tmp / 'ops.db'}")]
        if admin_url:
            urls.append(("Postgres", cleanup.enter_context(postgres_database(admin_url))))
        stores: list[Store] = []
        for label, url in urls:
            store = prepare_store(label, url, config_path)
            stores.append(store)
            cleanup.callback(store.engine.dispose)
            start_server(store, tmp, config_path)
            assert store.server is not None
            cleanup.callback(stop, store.server)

        bare = httpx.AsyncClient(
            base_url=f"{sim_url}/v1",
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            timeout=60,
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
        )
        paths = [
            BenchPath("httpx", "bare httpx -> simulator", httpx_call(bare)),
            BenchPath(
                "router",
                "bare Router.acompletion",
                router_call(build_router(GatewayConfig.model_validate(config))),
            ),
        ]
        for s in stores:
            core = BenchPath(
                f"core_{s.label.lower()}", f"llmops core in-process, {s.label}", _noop, store=s
            )
            core.call = core_call(s.gateway, core.outside)
            paths.append(core)
        for s in stores:
            core = BenchPath(
                f"core_nowait_{s.label.lower()}",
                f"core, {s.label}, LLMOPS_LOG_WAIT=false",
                _noop,
                store=s,
            )
            core.call = core_call(s.gateway_no_wait, core.outside)
            paths.append(core)
        paths += [
            BenchPath(
                f"http_{s.label.lower()}",
                f"llmops HTTP gateway, {s.label}",
                http_call(session, s),
                store=s,
                server=s.server,
            )
            for s in stores
        ]
        levels = [(args.concurrency, args.calls), (1, args.latency_calls)]
        load_before, started = load_average(), time.perf_counter()
        profile_text = ""
        try:
            for concurrency, calls in levels:
                for _ in range(args.rounds):
                    for path in paths:
                        pid = path.server.pid if path.server is not None else None
                        path.outside.clear()
                        result = await drive(path.call, calls, concurrency, pid)
                        path.runs.setdefault(concurrency, []).append(result)
                        if path.outside:
                            timed = path.outside[-calls:]  # not the warm-up
                            path.outside_ms.setdefault(concurrency, []).append(
                                statistics.median(timed)
                            )
                        progress(concurrency, path, result)
            elapsed, load_after = time.perf_counter() - started, load_average()
            # Callers waited for their rows' commits (the no-wait rows: after a flush):
            # every call so far must be in the log.
            for s in stores:
                await s.gateway_no_wait.flush()
            logs = {
                s.label.lower(): {
                    "rows": log_counts(s),
                    "expected_ok": sum(
                        args.rounds * (max(c, 20) + n)
                        for p in paths
                        if p.store is s
                        for c, n in levels
                    ),
                }
                for s in stores
            }
            if args.profile:
                profile_text = await profile(paths, args.profile_calls, [args.concurrency, 1])
        finally:
            await bare.aclose()
            await session.close()
        steps: list[str] = []
        for store in stores:
            await store.gateway.aclose()  # flushes its request log
            await store.gateway_no_wait.aclose()
            assert store.server is not None
            stop(store.server)  # flushes the server's
            if args.profile:
                steps += await step_costs(store)
    return {
        "paths": paths,
        "levels": levels,
        "load_before": load_before,
        "load_after": load_after,
        "elapsed_s": elapsed,
        "request_log": logs,
        "profile": profile_text,
        "steps": steps,
    }


def progress(concurrency: int, path: BenchPath, run: Run) -> None:
    print(
        f"  c={concurrency:<3} {path.label:<34} {run.calls_per_s:8.1f} calls/s  "
        f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  CPU {run.cpu_ms:5.2f} ms/call",
        file=sys.stderr,
        flush=True,
    )


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the report -------------------------------------------------------------------------


def table(paths: list[BenchPath], concurrency: int, calls: int, rounds: int) -> list[str]:
    base = next(p for p in paths if p.key == "router").summary(concurrency)
    lines = [
        f"concurrency {concurrency}: {calls} calls a round, median of {rounds} round(s)",
        "",
        "| path | calls/s | p50 ms | p99 ms | vs Router | p50 added ms | CPU ms/call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in paths:
        s = path.summary(concurrency)
        lines.append(
            f"| {path.label} | {s.calls_per_s:.1f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | "
            f"{s.calls_per_s / base.calls_per_s:.2f}x | {s.p50_ms - base.p50_ms:+.2f} | "
            f"{s.cpu_ms:.2f} |"
        )
    for path in paths:
        if path.outside_ms.get(concurrency):
            rounds_ms = ", ".join(f"{ms:.2f}" for ms in path.outside_ms[concurrency])
            lines.append(
                f"\n{path.label}: time outside the Router per call, median "
                f"{statistics.median(path.outside_ms[concurrency]):.3f} ms (rounds: {rounds_ms})"
            )
    return lines


def verdicts(paths: list[BenchPath], c_hi: int, c_lo: int) -> dict[str, dict[str, Any]]:
    """Each target: the measured value, the bound, and whether it is met."""
    router_hi = next(p for p in paths if p.key == "router").summary(c_hi)
    router_lo = next(p for p in paths if p.key == "router").summary(c_lo)
    checks: dict[str, dict[str, Any]] = {}
    for path in paths:
        if path.store is None or path.key.startswith("core_nowait"):
            continue  # the targets are for the defaults; the no-wait rows are for scale
        core = path.key.startswith("core_")
        min_ratio = CORE_MIN_RATIO if core else HTTP_MIN_RATIO
        max_added = CORE_MAX_ADDED_MS if core else HTTP_MAX_ADDED_MS
        ratio = path.summary(c_hi).calls_per_s / router_hi.calls_per_s
        added = path.summary(c_lo).p50_ms - router_lo.p50_ms
        checks[f"{path.key}_throughput_vs_router_c{c_hi}"] = {
            "value": round(ratio, 3),
            "target": f">= {min_ratio}x",
            "pass": ratio >= min_ratio,
        }
        checks[f"{path.key}_p50_added_ms_c{c_lo}"] = {
            "value": round(added, 2),
            "target": f"<= {max_added} ms",
            "pass": added <= max_added,
        }
    return checks


def report(args: argparse.Namespace, outcome: dict[str, Any]) -> None:
    paths: list[BenchPath] = outcome["paths"]
    levels: list[tuple[int, int]] = outcome["levels"]
    if outcome["profile"]:
        print(outcome["profile"])
    if outcome["steps"]:
        print("\n".join(outcome["steps"]))
    print(
        f"\nsimulator at zero latency in its own process; HTTP gateway: `llmops gateway serve`"
        f", own process, one worker; HTTP load from aiohttp. Load average (1, 5, 15 min) "
        f"{outcome['load_before']} before, {outcome['load_after']} after, {os.cpu_count()} "
        f"CPUs; {outcome['elapsed_s']:.0f} s measuring.\n"
    )
    for concurrency, calls in levels:
        print("\n".join(table(paths, concurrency, calls, args.rounds)))
        print()
    print(
        "CPU ms/call: this process for the in-process rows (client included), the gateway "
        "process for the HTTP rows (its client not included).\nrequest_log after the timed "
        "rounds (warm-ups included): "
        + "; ".join(
            f"{db}: {log['rows']} (every call logged ok: {log['expected_ok']} expected)"
            for db, log in outcome["request_log"].items()
        )
    )
    (c_hi, _), (c_lo, _) = levels
    checks = verdicts(paths, c_hi, c_lo)
    print("\ntargets:")
    for name, check in checks.items():
        verdict = "PASS" if check["pass"] else "MISS"
        print(f"  {verdict}  {name} = {check['value']} (target {check['target']})")
    print(f"  ({LITELLM_PROXY_NOTE})")
    results: dict[str, Any] = {}
    for concurrency, calls in levels:
        base = next(p for p in paths if p.key == "router").summary(concurrency)
        level: dict[str, Any] = {"calls": calls}
        for path in paths:
            s = path.summary(concurrency)
            level[path.key] = {
                "calls_per_s": round(s.calls_per_s, 1),
                "p50_ms": round(s.p50_ms, 3),
                "p99_ms": round(s.p99_ms, 3),
                "cpu_ms_per_call": round(s.cpu_ms, 3),
                "vs_router": round(s.calls_per_s / base.calls_per_s, 3),
                "p50_added_ms": round(s.p50_ms - base.p50_ms, 3),
                "rounds_calls_per_s": [round(r.calls_per_s, 1) for r in path.runs[concurrency]],
            }
            if path.outside_ms.get(concurrency):
                level[path.key]["outside_router_ms"] = round(
                    statistics.median(path.outside_ms[concurrency]), 3
                )
        results[f"c{concurrency}"] = level
    summary = {
        "bench": "gateway_overhead",
        "rounds": args.rounds,
        "aggregate": "median",
        "cpus": os.cpu_count(),
        "load_before": outcome["load_before"],
        "load_after": outcome["load_after"],
        "results": results,
        "request_log": outcome["request_log"],
        "targets": checks,
    }
    print(json.dumps(summary, separators=(",", ":")))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls a round at --concurrency")
    parser.add_argument("--concurrency", type=int, default=50, help="the throughput level")
    parser.add_argument("--latency-calls", type=int, default=300, help="calls a round at 1")
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians of rounds")
    parser.add_argument("--quick", action="store_true", help="200 and 50 calls, one round")
    parser.add_argument("--profile", action="store_true", help="profile the Router and core")
    parser.add_argument("--profile-calls", type=int, default=500)
    args = parser.parse_args()
    if args.quick:
        args.calls, args.latency_calls, args.rounds = 200, 50, 1
    report(args, asyncio.run(measure(args)))


if __name__ == "__main__":
    main()
