"""Rollup and Stripe-sync benchmark: 10 million synthetic request-log rows, and 10,000
(tenant, meter, hour) meter events sent to the Stripe stand-in.

Rollup: the request log is generated straight into a DuckDB warehouse (the loader is not
what is measured). Baseline, in the same run: a bare DuckDB ``GROUP BY tenant, feature,
model, hour`` (``date_trunc('hour', started_at)``) over the same rows, best of three.
Measured: the full rollup (every hour dirty: hourly and daily rollups with exact p50/p95,
rejects, the totals the gate compares, written to DuckDB and to a SQLite ops DB), wall
clock around ``run_rollup``, then an incremental rollup after one new hour of rows is added
(and after four, to show it grows with the new rows, not the history). The Great
Expectations gate is timed separately (its import alone takes seconds). For reference, the
bare query with the hour computed as integer arithmetic (as the rollup does) is shown too:
most of the baseline's time is ``date_trunc`` on a TIMESTAMPTZ.

Like the baseline, the rollup runs warm: the warehouse stays open across the measurements
(one DuckDB instance, so the rows read once stay in its buffer pool), and the process has
imported pandas and pyarrow and converted one Arrow result first. Those one-off costs are
printed on their own line (without a bytecode cache, pandas alone takes over a second).

Sync: ``--events`` meter-usage rows are synced by :func:`llmops.billing.sync.run_sync`
(the official stripe SDK, ledger writes, identifiers) to the stand-in running as its own
process (``llmops stripe-sim serve``); the baseline is the stand-in's own capacity, the
same number of meter events posted by a bare keep-alive httpx client in this run.

Not a test: timings vary with the machine (and with whoever else is using it). The last
line is one JSON object with every figure printed.

    uv run python bench/rollup_and_sync.py [--rows 10000000] [--events 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import duckdb
import httpx
import stripe
from sqlalchemy import insert

from llmops.billing.client import Pacer
from llmops.billing.setup import run_setup
from llmops.billing.sync import run_sync
from llmops.db.engine import make_engine, session_scope
from llmops.db.migrate import upgrade
from llmops.db.models import MeterUsage, Tenant
from llmops.metering.plans import load_billing_config
from llmops.metering.rollup import compute_windows, rollup_frames, run_rollup
from llmops.warehouse.load import connect
from llmops.warehouse.rollups import ensure_rollup_tables

HOURS = 168  # a week of hourly windows
START = datetime(2026, 11, 1, tzinfo=UTC)


def generate(con: duckdb.DuckDBPyConnection, rows: int, first_hour: int, hours: int) -> None:
    """Insert ``rows`` synthetic request-log rows spread over ``hours`` hours."""
    con.execute(
        f"""
        INSERT INTO request_log (id, request_id, started_at, ended_at, logged_at, tenant_id,
            feature_id, model_group, model, status, input_tokens, output_tokens,
            cached_tokens, reasoning_tokens, cost_usd, latency_ms, cache_hit, attempts,
            fallbacks_used, stream, redactions, prompt_name, prompt_version)
        SELECT i, 'req_' || i,
            $start + to_hours({first_hour} + (i % {hours})) + to_seconds((i * 7) % 3600),
            $start + to_hours({first_hour} + (i % {hours})) + to_seconds((i * 7) % 3600),
            $start + to_hours({first_hour} + (i % {hours})) + to_seconds((i * 7) % 3600),
            't' || (hash(i) % 20), 'f' || (hash(i + 1) % 4), 'fast', 'model-' || (hash(i + 2) % 2),
            CASE WHEN i % 50 = 0 THEN 'error' ELSE 'ok' END,
            100 + i % 900, 20 + i % 300, i % 50, 0,
            ((100 + i % 900) * 0.00000015 + (20 + i % 300) * 0.0000006)::DECIMAL(38, 12),
            50 + i % 2000, i % 10 = 0, 1, 0, false, 0, 'p', 1
        FROM range($lo, $lo + {rows}) t(i)
        """,
        {
            "start": START,
            "lo": con.execute("SELECT coalesce(max(id), 0) + 1 FROM request_log").fetchone()[0],
        },  # type: ignore[index]
    )


def bare(con: duckdb.DuckDBPyConnection, where: str = "", hour: str = "") -> float:
    hour = hour or "date_trunc('hour', started_at)"
    started = time.perf_counter()
    con.execute(
        f"SELECT tenant_id, feature_id, model, {hour} AS h, count(*), "
        "sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM request_log "
        f"{where} GROUP BY ALL"
    ).fetchall()
    return time.perf_counter() - started


def warm_up() -> float:
    """Import what a rollup process has imported anyway (pandas: the gate, and DuckDB's
    first exchange of a Python object; pyarrow) and convert one Arrow result."""
    started = time.perf_counter()
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    duckdb.connect().sql("SELECT 1 AS x").to_arrow_table()
    return time.perf_counter() - started


def timed_rollup(engine: Any, warehouse: Path) -> tuple[float, Any]:
    started = time.perf_counter()
    stats = run_rollup(engine, warehouse, None, load=False, gate=False)
    return time.perf_counter() - started, stats


def rollup_bench(rows: int, folder: Path) -> dict[str, Any]:
    warehouse = folder / "wh.duckdb"
    url = f"sqlite:///{folder / 'ops.db'}"
    upgrade(url)
    engine = make_engine(url)
    out: dict[str, Any] = {"rows": rows, "warm_up_s": warm_up()}
    # Held open to the end: run_rollup's own connections share this DuckDB instance.
    con = connect(warehouse)
    ensure_rollup_tables(con)
    started = time.perf_counter()
    generate(con, rows, 0, HOURS)
    out["generate_s"] = time.perf_counter() - started
    out["bare_group_by_s"] = min(bare(con) for _ in range(3))
    integer_hour = "epoch_us(started_at) // 3600000000"
    out["bare_integer_hour_s"] = min(bare(con, hour=integer_hour) for _ in range(3))

    out["full_rollup_s"], full = timed_rollup(engine, warehouse)
    out["full_parts_s"] = dict(full.seconds)
    out["full_hourly_rows"] = full.hourly_rows
    out["full_rollup_duckdb_s"] = full.seconds["compute"] + full.seconds["write_duckdb"]

    for label, new_hours in (("incremental_1h", 1), ("incremental_4h", 4)):
        per_hour = rows // HOURS
        first = HOURS + (0 if label.endswith("1h") else 1)
        generate(con, per_hour * new_hours, first, new_hours)
        lo = START + timedelta(hours=first)
        hi = lo + timedelta(hours=new_hours)
        where = f"WHERE started_at >= '{lo.isoformat()}' AND started_at < '{hi.isoformat()}'"
        out[f"{label}_bare_s"] = min(bare(con, where) for _ in range(3))
        con.execute(
            "INSERT OR IGNORE INTO dirty_hours SELECT DISTINCT date_trunc('hour', started_at) "
            f"FROM request_log {where}"
        )
        out[f"{label}_s"], inc = timed_rollup(engine, warehouse)
        out[f"{label}_rows"] = per_hour * new_hours
        out[f"{label}_hours"] = inc.hours

    # The gate on the full week's hourly rollups (GX import included on first use).
    hours = [START + timedelta(hours=h) for h in range(HOURS)]
    hourly, _, _, raw = compute_windows(con, hours)
    con.close()
    from llmops.metering.quality import run_gate

    started = time.perf_counter()
    gate = run_gate(rollup_frames(hourly.to_pandas(), raw))
    out["gate_first_s"] = time.perf_counter() - started
    started = time.perf_counter()
    run_gate(rollup_frames(hourly.to_pandas(), raw))
    out["gate_s"] = time.perf_counter() - started
    out["gate_passed"] = gate.success
    engine.dispose()
    return out


def start_stand_in() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "llmops"), "stripe-sim", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://\S+", line)
    assert match, line
    return proc, match.group(0)


def sync_bench(events: int, folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'sync.db'}"
    upgrade(url)
    engine = make_engine(url)
    billing_file = folder / "billing.yaml"
    tenants = 50
    billing_file.write_text(
        "meters:\n"
        "  tok: {event_name: bench_tokens, display_name: Tokens, measure: input_tokens}\n"
        "  calls: {event_name: bench_calls, display_name: Calls, measure: calls}\n"
        "plans:\n  p:\n    meters:\n      tok: {unit_price_usd: '0.000002'}\n"
        "      calls: {unit_price_usd: '0.001'}\n"
        "default_plan: p\n"
    )
    billing = load_billing_config(billing_file)
    hours = events // (tenants * 2)
    now = datetime.now(UTC)
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours + 2)
    proc, base = start_stand_in()
    try:
        client = stripe.StripeClient(
            "sk_test_bench", base_addresses={"api": base}, max_network_retries=0
        )
        with session_scope(engine) as session:
            for t in range(tenants):
                session.add(Tenant(id=f"t{t}", name=f"T{t}", plan="p"))
        run_setup(engine, billing, client)
        with session_scope(engine) as session:
            session.execute(
                insert(MeterUsage),
                [
                    {
                        "tenant_id": f"t{t}",
                        "meter": meter,
                        "plan": "p",
                        "window_start": first + timedelta(hours=h),
                        "quantity": 1000 + t + h,
                        "amount_usd": Decimal("0.01"),
                        "updated_at": now,
                    }
                    for t in range(tenants)
                    for h in range(hours)
                    for meter in ("tok", "calls")
                ],
            )
        started = time.perf_counter()
        report = run_sync(engine, billing, client, gate=False, pacer=Pacer(), settle=timedelta(0))
        sync_s = time.perf_counter() - started
        assert report.sent == tenants * hours * 2 and report.ok, report.to_dict()
        customer = client.v1.customers.list({"limit": 1}).data[0]["id"]
        ts = int((now - timedelta(hours=1)).timestamp())
        with httpx.Client(base_url=base, headers={"Authorization": "Bearer sk_test_bench"}) as http:
            started = time.perf_counter()
            for i in range(report.sent):
                answer = http.post(
                    "/v1/billing/meter_events",
                    data={
                        "event_name": "bench_tokens",
                        "identifier": f"raw-{i}",
                        "timestamp": str(ts),
                        "payload[stripe_customer_id]": customer,
                        "payload[value]": "1",
                    },
                )
                assert answer.status_code == 200, answer.text
            raw_s = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
        engine.dispose()
    return {
        "events": report.sent,
        "sync_s": sync_s,
        "sync_events_per_s": report.sent / sync_s,
        "stand_in_events_per_s": report.sent / raw_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        folder = Path(tmp)
        r = rollup_bench(args.rows, folder)
        s = sync_bench(args.events, folder)
    base = r["bare_group_by_s"]
    ratios = {
        "full_vs_bare": r["full_rollup_s"] / base,
        "full_duckdb_vs_bare": r["full_rollup_duckdb_s"] / base,
        "incremental_1h_vs_bare_full": r["incremental_1h_s"] / base,
        "incremental_1h_vs_bare_1h": r["incremental_1h_s"] / r["incremental_1h_bare_s"],
        "incremental_4h_vs_1h": r["incremental_4h_s"] / r["incremental_1h_s"],
        "sync_vs_stand_in_capacity": s["sync_events_per_s"] / s["stand_in_events_per_s"],
    }
    print(
        f"rollup over {r['rows']:,} request-log rows ({HOURS} hours, "
        f"{r['full_hourly_rows']:,} hourly rollup rows); shared 2-core machine\n"
    )
    table = [
        ("process warm-up: imports, first Arrow result", r["warm_up_s"], r["warm_up_s"] / base),
        ("bare DuckDB GROUP BY (baseline)", base, 1.0),
        (
            "  the same with an integer hour, not date_trunc",
            r["bare_integer_hour_s"],
            r["bare_integer_hour_s"] / base,
        ),
        ("full rollup, all stores", r["full_rollup_s"], ratios["full_vs_bare"]),
        (
            "  of which DuckDB compute + write",
            r["full_rollup_duckdb_s"],
            ratios["full_duckdb_vs_bare"],
        ),
        (
            "  of which SQLite ops-DB write",
            r["full_parts_s"]["write_ops_db"],
            r["full_parts_s"]["write_ops_db"] / base,
        ),
        (
            f"bare GROUP BY of the new hour ({r['incremental_1h_rows']:,} rows)",
            r["incremental_1h_bare_s"],
            r["incremental_1h_bare_s"] / base,
        ),
        (
            "incremental rollup, 1 new hour",
            r["incremental_1h_s"],
            ratios["incremental_1h_vs_bare_full"],
        ),
        ("incremental rollup, 4 new hours", r["incremental_4h_s"], r["incremental_4h_s"] / base),
        ("GX gate, first run (import)", r["gate_first_s"], r["gate_first_s"] / base),
        ("GX gate, warm", r["gate_s"], r["gate_s"] / base),
    ]
    print(f"{'step':<52} {'seconds':>9} {'x bare':>8}")
    for name, secs, ratio in table:
        print(f"{name:<52} {secs:>9.3f} {ratio:>8.2f}")
    print(f"\nStripe sync of {s['events']:,} (tenant, meter, hour) events to the stand-in")
    print(f"{'path':<52} {'events/s':>9} {'ratio':>8}")
    capacity = s["stand_in_events_per_s"]
    print(f"{'stand-in capacity, bare httpx (baseline)':<52} {capacity:>9.0f} {1.0:>8.2f}")
    print(
        f"{'llmops sync (stripe SDK, ledger, retries)':<52} {s['sync_events_per_s']:>9.0f} "
        f"{ratios['sync_vs_stand_in_capacity']:>8.2f}"
    )
    print(json.dumps({"rollup": r, "sync": s, "ratios": ratios}, default=str))


if __name__ == "__main__":
    main()
