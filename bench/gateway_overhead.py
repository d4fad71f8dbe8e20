"""What the gateway core costs on top of LiteLLM's Router, measured in one run.

Starts the provider simulator in its own process (zero latency), then sends the same
number of calls at the same concurrency through:
  1. ``Router.acompletion`` alone (the baseline: what any LiteLLM user pays),
  2. ``Gateway.chat`` with the request log on SQLite (pricing + one committed row a call),
  3. ``Gateway.chat`` on Postgres, when LLMOPS_TEST_DATABASE_URL is set (an admin URL:
     the benchmark creates its own database there and drops it after).
Prints calls/s and the ratio to the baseline. Not a test: nothing here asserts timings.

    uv run python bench/gateway_overhead.py [--calls 1000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmops.settings import apply_offline_defaults

apply_offline_defaults()

from sqlalchemy import create_engine, make_url, text  # noqa: E402

from llmops.db.engine import make_engine  # noqa: E402
from llmops.db.migrate import upgrade  # noqa: E402
from llmops.gateway.config import GatewayConfig  # noqa: E402
from llmops.gateway.core import ChatRequest, Gateway  # noqa: E402
from llmops.gateway.router import build_router  # noqa: E402

MESSAGES = [{"role": "user", "content": "Summarize: the export button does nothing in Firefox."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sim(port: int, config: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmops",
            "sim",
            "serve",
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "simulator listening on ..."
    return proc


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


def gateway_config(base_url: str) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 30, "num_retries": 0},
            "model_groups": {
                "fast": {
                    "deployments": [
                        {
                            "id": "d1",
                            "model": "openai/gpt-4o-mini",
                            "api_base": base_url,
                            "api_key": "sk-bench",
                        }
                    ]
                }
            },
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.60"}
            ],
        }
    )


async def drive(call, calls: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(min(50, calls))))  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return calls / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    sim_cfg = tmp / "sim.yaml"
    sim_cfg.write_text("default: {ttft_ms: 0, tokens_per_s: 0}\n")
    port = free_port()
    sim = start_sim(port, sim_cfg)
    base_url = f"http://127.0.0.1:{port}/v1"
    config = gateway_config(base_url)
    results: list[tuple[str, float]] = []
    try:
        router = build_router(config)

        async def raw(i: int) -> None:
            await router.acompletion(model="fast", messages=MESSAGES, max_tokens=32)

        results.append(
            ("Router.acompletion (baseline)", await drive(raw, args.calls, args.concurrency))
        )

        targets = [("Gateway.chat, SQLite log", f"sqlite:///{tmp / 'ops.db'}")]
        admin_url = os.environ.get("LLMOPS_TEST_DATABASE_URL")
        if admin_url:
            targets.append(("Gateway.chat, Postgres log", create_database(admin_url)))
        for label, url in targets:
            upgrade(url)
            engine = make_engine(url)
            gateway = Gateway(config, engine, router=build_router(config))

            async def through_gateway(i: int, gateway: Gateway = gateway) -> None:
                await gateway.chat(
                    ChatRequest(
                        "bench", "bench", MESSAGES, "fast", max_tokens=32, action_id=f"a{i}"
                    )
                )

            results.append((label, await drive(through_gateway, args.calls, args.concurrency)))
            engine.dispose()
            if url.startswith("postgresql"):
                drop_database(admin_url or "", url)
    finally:
        sim.terminate()
        sim.wait(timeout=10)

    base = results[0][1]
    print(f"\n{args.calls} calls, concurrency {args.concurrency}, simulator at zero latency\n")
    print(f"| {'path':<32} | {'calls/s':>8} | {'vs baseline':>11} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 13}|")
    for label, rate in results:
        print(f"| {label:<32} | {rate:>8.1f} | {rate / base:>10.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
