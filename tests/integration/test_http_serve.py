"""``llmops gateway serve`` in a subprocess: configured from the environment like a deployment."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llmops.sim import SimConfig, SimServer

Runner = Callable[..., subprocess.CompletedProcess[str]]  # the run_llmops fixture

REPO = Path(__file__).resolve().parents[2]
LLMOPS = Path(sys.executable).parent / "llmops"  # the console script users run


@pytest.fixture
def sim() -> Iterator[SimServer]:
    zero = {"ttft_ms": 0, "tokens_per_s": 0}
    with SimServer(SimConfig.model_validate({"seed": 1, "default": zero})) as server:
        yield server


@pytest.fixture
def user_env(sim: SimServer, cli_env: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return cli_env(sim.base_url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_openai_clients_until_interrupted(
    user_env: dict[str, str], run_llmops: Runner
) -> None:
    assert run_llmops(user_env, "init").returncode == 0
    created = run_llmops(user_env, "tenants", "create", "Acme", "--id", "acme")
    (key,) = re.findall(r"llm_[A-Za-z0-9_-]{40}", created.stdout)
    port = free_port()
    server = subprocess.Popen(
        [str(LLMOPS), "gateway", "serve", "--port", str(port)],
        cwd=REPO,
        env=user_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # LiteLLM's import takes seconds
        while True:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "gateway did not come up"
            try:
                if httpx.get(f"{base_url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        llm = openai.OpenAI(
            base_url=f"{base_url}/v1",
            api_key=key,
            default_headers={"X-LLMOps-Feature": "smoke"},
            max_retries=0,
        )
        answer = llm.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hello"}]
        )
        assert answer.choices[0].message.content
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output


def test_serve_refuses_to_start_on_an_uninitialized_database(
    user_env: dict[str, str], run_llmops: Runner
) -> None:
    result = run_llmops(user_env, "gateway", "serve", "--port", str(free_port()))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "llmops init" in lines[0]
