"""SIGTERM under load: the HTTP gateway drains in-flight calls and loses no request_log row.

A deployment stops a gateway with SIGTERM while callers are mid-request. uvicorn stops
accepting, lets the requests it is serving finish, then runs the app's shutdown, which
flushes the request log. So every caller that got a 200 must find exactly one ``ok``
row under the ``X-LLMOps-Request-Id`` it was given, every call the provider saw must be
logged, and the server must exit 0 promptly.

Two servers: ``llmops gateway serve`` as shipped (callers wait for their row's commit),
and the same app with ``wait_for_log`` off, where a 200 can leave before its row is
committed and only the shutdown flush stands between it and a lost row.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from llmops.db.engine import make_engine
from llmops.db.models import RequestLog
from llmops.sim import SimConfig, SimServer
from llmops.tenants import create_tenant

REPO = Path(__file__).resolve().parents[2]
LLMOPS = Path(sys.executable).parent / "llmops"  # the console script users run
REQUESTS = 100
#: Responses to wait for before the signal: the rest (most) are still in flight.
SIGNAL_AFTER = 10
STARTUP_TIMEOUT_S = 60  # LiteLLM's import alone takes seconds
EXIT_TIMEOUT_S = 20

#: The shipped app with callers not waiting for their row's commit.
NO_WAIT_SERVER = """
import signal
import sys

import uvicorn

from llmops.db.engine import engine_from_settings
from llmops.gateway.core import Gateway
from llmops.gateway.http import create_app
from llmops.settings import apply_offline_env, get_settings

apply_offline_env()


def exit_cleanly(signum, frame):
    raise SystemExit(0)


# As `llmops gateway serve` must: uvicorn re-raises SIGTERM after its graceful shutdown.
signal.signal(signal.SIGTERM, exit_cleanly)
settings = get_settings()
engine = engine_from_settings(settings)
gateway = Gateway.from_settings(settings, engine)
gateway.wait_for_log = False
app = create_app(gateway, engine, owns_gateway=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", access_log=False)
"""


@dataclass
class Outcome:
    action_id: str
    status: int | None = None  # None: no HTTP response (refused or cut off)
    request_id: str | None = None
    after_signal: bool = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[SimServer]:
    # Enough latency that a hundred calls are still in flight when the signal lands.
    profile = {"ttft_ms": {"dist": "uniform", "min": 50, "max": 250}, "tokens_per_s": 0}
    with SimServer(SimConfig.model_validate({"seed": 3, "default": profile})) as server:
        yield server


def wait_until_healthy(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        assert server.poll() is None, f"gateway exited at startup:\n{log.read_text()}"
        assert time.monotonic() < deadline, "gateway did not come up"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


async def load_then_signal(
    base_url: str, key: str, server: subprocess.Popen[bytes]
) -> tuple[list[Outcome], float]:
    """Send REQUESTS calls at once; SIGTERM the server once SIGNAL_AFTER have answered."""
    outcomes = [Outcome(f"sigterm-{i}") for i in range(REQUESTS)]
    answered = 0
    enough = asyncio.Event()
    signalled_at: list[float] = []
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def call(outcome: Outcome) -> None:
            nonlocal answered
            try:
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
                    headers={
                        "Authorization": f"Bearer {key}",
                        "X-LLMOps-Feature": "sigterm",
                        "X-LLMOps-Action-Id": outcome.action_id,
                    },
                )
            except httpx.TransportError:
                return  # refused after the signal, or cut off: no response
            finally:
                outcome.after_signal = bool(signalled_at)
            outcome.status = response.status_code
            outcome.request_id = response.headers.get("x-llmops-request-id")
            answered += 1
            if answered >= SIGNAL_AFTER:
                enough.set()

        async def terminate() -> None:
            await asyncio.wait_for(enough.wait(), timeout=30)
            server.send_signal(signal.SIGTERM)
            signalled_at.append(time.monotonic())

        await asyncio.gather(terminate(), *(call(o) for o in outcomes))
    return outcomes, signalled_at[0]


@pytest.mark.parametrize("wait_for_log", [True, False], ids=["default", "no-wait"])
def test_sigterm_under_load_loses_no_request_log_row(
    tmp_path: Path,
    sim: SimServer,
    wait_for_log: bool,
    cli_env: Callable[[str], dict[str, str]],
) -> None:
    env = cli_env(sim.base_url)
    init = subprocess.run(
        [str(LLMOPS), "init"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'ops.db'}")
    try:
        _, key = create_tenant(engine, "acme", "Acme")
    finally:
        engine.dispose()

    port = free_port()
    command = (
        [str(LLMOPS), "gateway", "serve", "--port", str(port)]
        if wait_for_log
        else [sys.executable, "-c", NO_WAIT_SERVER, str(port)]
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, server, log)
        sim.reset()  # count only the calls of the load below
        outcomes, signalled_at = asyncio.run(load_then_signal(base_url, key, server))
        server.wait(timeout=EXIT_TIMEOUT_S)
        exit_s = time.monotonic() - signalled_at
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    provider_calls = sim.stats()["total"]

    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'ops.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(RequestLog.request_id, RequestLog.action_id, RequestLog.status).where(
                    RequestLog.feature_id == "sigterm"
                )
            ).all()
    finally:
        engine.dispose()

    ok = [o for o in outcomes if o.status == 200]
    # The test means something only if calls were still being served when the signal came.
    assert [o for o in ok if o.after_signal], "no call was in flight at SIGTERM"
    assert all(o.status in (200, None) for o in outcomes), Counter(o.status for o in outcomes)

    by_request = Counter(row.request_id for row in rows)
    by_action = Counter(row.action_id for row in rows)
    assert not [r for r, n in by_request.items() if n > 1], "duplicated request_log rows"
    assert not [a for a, n in by_action.items() if n > 1], "a call logged twice"
    row_of = {row.request_id: row for row in rows}
    for outcome in ok:
        row = row_of.get(outcome.request_id or "")
        assert row is not None, f"a 200 ({outcome.request_id}) has no request_log row"
        assert (row.status, row.action_id) == ("ok", outcome.action_id)
    answered = {o.request_id for o in ok}
    cut_off = [row for row in rows if row.request_id not in answered]
    assert all(row.status in ("cancelled", "error") for row in cut_off), cut_off
    # Every call that reached the provider was logged (nothing else calls it here).
    assert len(rows) >= provider_calls, (len(rows), provider_calls)
    # A drained shutdown is a clean exit, not death by signal (143 to a supervisor).
    assert server.returncode == 0, log.read_text()
    assert exit_s < EXIT_TIMEOUT_S, log.read_text()
