"""The spend-cap race: many threads in several processes reserve against one $1.00 cap.

LiteLLM's proxy admits 4 of 5 concurrent calls past a $0.45 budget: it checks spend
against a counter that calls only update after they finish. Here every call reserves its
worst case first, in a transaction that locks the ledger, so the cap holds however many
threads and processes race for it.

Each of ``--processes`` spawned processes (its own engine) runs ``--threads`` threads;
together they send ``--requests`` requests for one tenant and feature, which three caps
cover: the tenant's $1.00 hard day cap (the one that binds), a $2.00 hard total cap on
the (tenant, feature) pair and a $50 soft day cap on the feature. Each request reserves a
worst case of $0.010-0.030, "calls" a provider for a few milliseconds, then settles an
actual cost of 60-95% of the hold, or releases it (one in ten calls fails). A checker
thread reads the ledger in a loop and records the largest spent + reserved it sees.

Runs on SQLite, and on Postgres when LLMOPS_TEST_DATABASE_URL is set (an admin URL: the
benchmark creates its own database there and drops it after). Prints, per backend:
admitted, settled, max(spent + reserved), efficiency (settled / cap), and reserve+settle
latency p50/p99 under the race, uncontended, and on the no-cap fast path (the baseline
of the ratio column). The last line is one JSON object with every figure. Not a test:
nothing here asserts timings (tests/integration/test_budget_race.py asserts the cap).

    uv run python bench/budget_race.py [--requests 200] [--processes 4] [--threads 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from queue import Empty
from typing import Any

from sqlalchemy import create_engine, make_url, text

from llmops.db.engine import make_engine
from llmops.errors import BudgetExceeded
from llmops.gateway.budget import BudgetManager
from llmops.gateway.budget_ledger import RESERVATIONS

TENANT, FEATURE = "race", "summary"
CAP_USD = Decimal("1.00")
# (request id, worst case, actual cost or "" when the call fails and the hold is released)
Plan = list[tuple[str, str, str]]


@dataclass
class RaceResult:
    """What one race did, with every money figure as exact Decimal text."""

    backend: str
    mode: str
    requests: int
    processes: int
    threads: int
    admitted: int
    rejected: int
    released: int
    settled_usd: str
    reserved_left_usd: str
    cap_usd: str
    max_spent_plus_reserved_usd: str
    checker_samples: int
    efficiency: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    startup_s: float = 0.0
    shutdown_s: float = 0.0
    worker_settled_usd: str = "0"


def make_plan(requests: int, seed: int = 7) -> Plan:
    rng = random.Random(seed)
    plan: Plan = []
    for i in range(requests):
        worst = Decimal(rng.randint(10, 30)) / 1000
        actual = (worst * Decimal(rng.randint(60, 95)) / 100).quantize(Decimal("0.000001"))
        plan.append((f"req_race_{i:05d}", str(worst), "" if i % 10 == 9 else str(actual)))
    return plan


def set_caps(manager: BudgetManager) -> None:
    manager.set_cap(tenant_id=TENANT, feature_id=None, limit_usd=CAP_USD, period="day")
    manager.set_cap(tenant_id=TENANT, feature_id=FEATURE, limit_usd=Decimal("2.00"), period="total")
    manager.set_cap(
        tenant_id=None, feature_id=FEATURE, limit_usd=Decimal(50), period="day", mode="soft"
    )


def _run_requests(manager: BudgetManager, plan: Plan, threads: int) -> dict[str, Any]:
    """Run ``plan`` on ``threads`` threads; counts, settled total and latencies (ms)."""
    lock = threading.Lock()
    out: dict[str, Any] = {
        "admitted": 0,
        "rejected": 0,
        "released": 0,
        "settled": Decimal(0),
        "latencies": [],
    }
    rng = random.Random(os.getpid())

    def run(share: Plan) -> None:
        for request_id, worst, actual in share:
            started = time.perf_counter()
            try:
                reservation = manager.reserve(
                    request_id=request_id,
                    tenant_id=TENANT,
                    feature_id=FEATURE,
                    amount_usd=Decimal(worst),
                )
            except BudgetExceeded:
                with lock:
                    out["rejected"] += 1
                continue
            reserved = time.perf_counter()
            time.sleep(rng.uniform(0.001, 0.004))  # the provider call
            called = time.perf_counter()
            if actual:
                manager.settle(reservation, Decimal(actual))
            else:
                manager.release(reservation)
            done = time.perf_counter()
            with lock:
                out["admitted"] += 1
                if actual:
                    out["settled"] += Decimal(actual)
                else:
                    out["released"] += 1
                out["latencies"].append((reserved - started + done - called) * 1000)

    workers = [threading.Thread(target=run, args=(plan[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out["settled"] = str(out["settled"])
    return out


async def _run_leased(manager: BudgetManager, plan: Plan, tasks: int) -> dict[str, Any]:
    """Run ``plan`` as ``tasks`` coroutines holding on this process's leases, as the gateway
    does: hold, call, settle (or release), then book the spend in a commit of its own."""
    from llmops.gateway.budget_leases import CapLeases

    leases = CapLeases(manager)
    out: dict[str, Any] = {
        "admitted": 0,
        "rejected": 0,
        "released": 0,
        "settled": Decimal(0),
        "latencies": [],
    }
    rng = random.Random(os.getpid())

    async def run(share: Plan) -> None:
        for _, worst, actual in share:
            started = time.perf_counter()
            try:
                hold = await leases.hold(TENANT, FEATURE, Decimal(worst))
            except BudgetExceeded:
                out["rejected"] += 1
                continue
            reserved = time.perf_counter()
            await asyncio.sleep(rng.uniform(0.001, 0.004))  # the provider call
            called = time.perf_counter()
            if actual:
                leases.settle(hold, Decimal(actual))
                await asyncio.to_thread(leases.book_now)  # the request log's commit
            else:
                leases.release(hold)
            done = time.perf_counter()
            out["admitted"] += 1
            if actual:
                out["settled"] += Decimal(actual)
            else:
                out["released"] += 1
            out["latencies"].append((reserved - started + done - called) * 1000)

    await asyncio.gather(*(run(plan[i::tasks]) for i in range(tasks)))
    await asyncio.to_thread(leases.close)  # every unused lease goes back
    out["settled"] = str(out["settled"])
    return out


def _process_main(
    url: str, plan: Plan, threads: int, ready: Any, go: Any, results: Any, mode: str
) -> None:
    """One racing process: its own engine and manager, warmed, then released on ``go``."""
    engine = make_engine(url)
    manager = BudgetManager(engine)
    # Loads the cap list and opens a connection (a zero amount reserves nothing).
    manager.reserve(request_id="warm", tenant_id=TENANT, feature_id=FEATURE, amount_usd=Decimal(0))
    ready.put(os.getpid())
    go.wait()
    try:
        if mode == "leases":
            results.put(asyncio.run(_run_leased(manager, plan, threads)))
        else:
            results.put(_run_requests(manager, plan, threads))
    finally:
        engine.dispose()


class _Checker(threading.Thread):
    """Reads the hard caps' ledger rows in a loop; records the largest spent + reserved."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.stop = threading.Event()
        self.max_used = Decimal(0)
        self.violations: list[str] = []
        self.samples = 0

    def run(self) -> None:
        query = text(
            "SELECT c.scope_key, c.limit_usd, l.spent_usd, l.reserved_usd "
            "FROM budget_ledger l JOIN spend_caps c ON c.id = l.cap_id WHERE c.mode = 'hard'"
        )
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                for scope, limit, spent, reserved in conn.execute(query):
                    # Money is text on SQLite: add it as Decimal here, never in SQL.
                    used = Decimal(str(spent)) + Decimal(str(reserved))
                    if scope == f"tenant:{TENANT}":
                        self.max_used = max(self.max_used, used)
                    if used > Decimal(str(limit)):
                        self.violations.append(f"{scope}: {used} > {limit}")
                conn.commit()
                self.samples += 1
                time.sleep(0.0005)
        self.engine.dispose()


def run_race(
    url: str,
    *,
    requests: int = 200,
    processes: int = 4,
    threads: int = 6,
    seed: int = 7,
    mode: str = "reservations",
) -> tuple[RaceResult, list[str]]:
    """Race ``requests`` over ``processes`` x ``threads`` on a migrated, empty DB at ``url``.

    ``mode`` "reservations": a reservation per request (threads); "leases": each process
    admits from its leases of cap headroom, as the gateway does (``threads`` coroutines).
    Returns the result and the checker's violations (spent + reserved above a hard cap).
    """
    engine = make_engine(url)
    manager = BudgetManager(engine)
    set_caps(manager)
    plan = make_plan(requests, seed)
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=_process_main,
            args=(url, plan[i::processes], threads, ready, go, results, mode),
        )
        for i in range(processes)
    ]
    checker = _Checker(url)
    spawned = time.perf_counter()
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            _get(ready, procs, timeout=60)
        startup = time.perf_counter() - spawned
        checker.start()
        started = time.perf_counter()
        go.set()
        outs = [_get(results, procs, timeout=120) for _ in procs]
        elapsed = time.perf_counter() - started
        stopping = time.perf_counter()
    finally:
        for proc in procs:
            if proc.pid is not None:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
        checker.stop.set()
        if checker.is_alive():
            checker.join(timeout=10)
    stopped = time.perf_counter() - stopping
    if any(proc.exitcode != 0 for proc in procs):
        raise RuntimeError(f"a racing process failed: {[proc.exitcode for proc in procs]}")
    status = {cap.scope_key: cap for cap in manager.list_caps()}[f"tenant:{TENANT}"]
    engine.dispose()
    latencies = sorted(ms for out in outs for ms in out["latencies"])
    result = RaceResult(
        backend=make_url(url).get_backend_name(),
        mode=mode,
        requests=requests,
        processes=processes,
        threads=threads,
        admitted=sum(out["admitted"] for out in outs),
        rejected=sum(out["rejected"] for out in outs),
        released=sum(out["released"] for out in outs),
        settled_usd=str(status.spent_usd.normalize()),
        reserved_left_usd=str(status.reserved_usd.normalize()),
        cap_usd=str(CAP_USD),
        max_spent_plus_reserved_usd=str(checker.max_used.normalize()),
        checker_samples=checker.samples,
        efficiency=round(float(status.spent_usd / CAP_USD), 4),
        latency_ms=_percentiles("race", latencies),
        elapsed_s=round(elapsed, 3),
        startup_s=round(startup, 3),
        shutdown_s=round(stopped, 3),
        worker_settled_usd=str(sum(Decimal(out["settled"]) for out in outs).normalize()),
    )
    return result, checker.violations


def _get(queue: Any, procs: list[Any], timeout: float) -> Any:
    """The next item of ``queue``, failing at once if a racing process died instead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return queue.get(timeout=0.2)
        except Empty:
            dead = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"racing processes failed or stalled: {dead}") from None


def _percentiles(label: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {f"{label}_p50": round(statistics.median(ordered), 3), f"{label}_p99": round(p99, 3)}


def measure_latency(url: str, calls: int) -> dict[str, float]:
    """Sequential reserve+settle: with three caps (uncontended) and with none (fast path)."""
    engine = make_engine(url)
    manager = BudgetManager(engine)
    figures: dict[str, float] = {}
    for label, tenant, feature in (("capped", "solo", "solo"), ("fast_path", "free", "free")):
        if label == "capped":
            manager.set_cap(
                tenant_id=tenant, feature_id=None, limit_usd=Decimal(10**6), period="day"
            )
            manager.set_cap(
                tenant_id=tenant, feature_id=feature, limit_usd=Decimal(10**6), period="month"
            )
            manager.set_cap(
                tenant_id=None, feature_id=feature, limit_usd=Decimal(10**6), period="total"
            )
        samples = []
        for i in range(calls + 20):
            started = time.perf_counter()
            reservation = manager.reserve(
                request_id=f"lat_{label}_{i}",
                tenant_id=tenant,
                feature_id=feature,
                amount_usd=Decimal("0.02"),
            )
            manager.settle(reservation, Decimal("0.015"))
            if i >= 20:  # the first calls warm the pool and the cap cache
                samples.append((time.perf_counter() - started) * 1000)
        figures.update(_percentiles(label, samples))
    # What the DB charges for one committed write, whoever makes it: reserve+settle is two.
    samples = []
    with engine.connect() as conn:
        for i in range(calls):
            started = time.perf_counter()
            conn.execute(
                RESERVATIONS.insert().values(
                    id=f"commit_{i}", request_id="commit", amount_usd=0, status="released"
                )
            )
            conn.commit()
            samples.append((time.perf_counter() - started) * 1000)
    figures.update(_percentiles("one_commit", samples))
    engine.dispose()
    return figures


def _reset(url: str) -> None:
    """Forget every cap, hold and lease (set_caps makes the caps again)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in ("budget_reservations", "budget_leases", "budget_ledger", "spend_caps"):
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


def create_database(admin_url: str) -> str:
    """A fresh Postgres database for this run; returns its URL."""
    name = f"llmops_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--latency-calls", type=int, default=500)
    args = parser.parse_args()
    from llmops.db.migrate import upgrade  # here: spawned racers need no Alembic

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    targets = [("sqlite", f"sqlite:///{tmp / 'ops.db'}", "")]
    admin_url = os.environ.get("LLMOPS_TEST_DATABASE_URL", "")
    if admin_url:
        targets.append(("postgres", create_database(admin_url), admin_url))
    report: dict[str, Any] = {"requests": args.requests, "cap_usd": str(CAP_USD)}
    for label, url, admin in targets:
        try:
            upgrade(url)
            for mode in ("reservations", "leases"):
                if mode == "leases":  # a clean slate: the same caps, no spend yet
                    _reset(url)
                result, violations = run_race(
                    url,
                    requests=args.requests,
                    processes=args.processes,
                    threads=args.threads,
                    mode=mode,
                )
                if mode == "reservations":
                    result.latency_ms.update(measure_latency(url, args.latency_calls))
                report[f"{label}_{mode}"] = {**asdict(result), "violations": violations}
                _print(result, violations)
        finally:
            if admin:
                drop_database(admin, url)
    print(json.dumps(report, sort_keys=True))


def _print(result: RaceResult, violations: list[str]) -> None:
    lat = result.latency_ms
    print(
        f"\n{result.backend}, {result.mode}: {result.requests} requests from "
        f"{result.processes} processes x {result.threads} threads against a "
        f"${result.cap_usd} hard cap ({result.elapsed_s} s)"
    )
    print(
        f"  admitted {result.admitted} (released {result.released}), rejected "
        f"{result.rejected}; settled ${result.settled_usd}, efficiency {result.efficiency:.1%}"
    )
    print(
        f"  max(spent + reserved) seen ${result.max_spent_plus_reserved_usd} over "
        f"{result.checker_samples} reads; violations: {len(violations)}"
    )
    base = lat.get("fast_path_p50") or 1.0
    print(
        f"  | {'reserve+settle':<24} | {'p50 ms':>8} | {'p99 ms':>8} | {'p50 vs fast path':>16} |"
    )
    print(f"  |{'-' * 26}|{'-' * 10}|{'-' * 10}|{'-' * 18}|")
    for name, key in (
        ("one INSERT + COMMIT", "one_commit"),
        ("no caps (fast path)", "fast_path"),
        ("3 caps, uncontended", "capped"),
        ("3 caps, under the race", "race"),
    ):
        p50, p99 = lat.get(f"{key}_p50", 0.0), lat.get(f"{key}_p99", 0.0)
        print(f"  | {name:<24} | {p50:>8.3f} | {p99:>8.3f} | {p50 / base:>15.0f}x |")


if __name__ == "__main__":
    main()
