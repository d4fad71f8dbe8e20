"""The local stack behind ``make serve`` / ``make stop``: Prefect server (with its UI), a
worker for the ``llmops`` pool, the provider simulator and the HTTP gateway.

Each service is a background process in its own session, with its log under
``<data_dir>/logs/`` and its pid under ``<data_dir>/run/``; ``up`` is idempotent (a
service already answering is left alone) and ``down`` sends SIGTERM to each process
group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmops.errors import LLMOpsError


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None  # polled until it answers 200
    where: str  # what to print for the user


@dataclass(frozen=True)
class Ports:
    prefect: int = 4200
    sim: int = 8900
    gateway: int = 8080


def services(ports: Ports, pool: str = "llmops") -> list[Service]:
    """The stack, in start order."""
    bin_dir = Path(sys.executable).parent
    prefect, llmops = str(bin_dir / "prefect"), str(bin_dir / "llmops")
    api = f"http://127.0.0.1:{ports.prefect}"
    return [
        Service(
            "prefect-server",
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(ports.prefect)],
            f"{api}/api/health",
            f"Prefect UI and API  {api}",
        ),
        Service(
            "worker",
            [prefect, "worker", "start", "--pool", pool, "--type", "process"],
            None,
            f"Prefect worker      pool {pool!r}",
        ),
        Service(
            "sim",
            [llmops, "sim", "serve", "--host", "127.0.0.1", "--port", str(ports.sim)],
            f"http://127.0.0.1:{ports.sim}/healthz",
            f"provider simulator  http://127.0.0.1:{ports.sim}/v1",
        ),
        Service(
            "gateway",
            [llmops, "gateway", "serve", "--host", "127.0.0.1", "--port", str(ports.gateway)],
            f"http://127.0.0.1:{ports.gateway}/healthz",
            f"HTTP gateway        http://127.0.0.1:{ports.gateway}/v1 (OpenAI-compatible)",
        ),
    ]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pid(run_dir: Path, name: str) -> int | None:
    path = run_dir / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def up(
    data_dir: Path,
    env: Mapping[str, str],
    *,
    ports: Ports = Ports(),
    timeout_s: float = 120,
    echo: Callable[[str], None] = print,
    before_worker: Callable[[Mapping[str, str]], None] | None = None,
) -> None:
    """Start every service that is not running yet and wait until each answers."""
    run_dir, log_dir = data_dir / "run", data_dir / "logs"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {
        **env,
        "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
        "LLMOPS_SIM_URL": f"http://127.0.0.1:{ports.sim}/v1",
    }
    for service in services(ports):
        if service.name == "worker" and before_worker is not None:
            before_worker(child_env)
        if _pid(run_dir, service.name) is not None:
            echo(f"  running   {service.where}")
            continue
        if service.health_url and _answers(service.health_url):
            raise LLMOpsError(
                f"{service.name}: something not started by llmops already answers at "
                f"{service.health_url}; stop it or choose another port"
            )
        log = (log_dir / f"{service.name}.log").open("ab")
        process = subprocess.Popen(
            service.argv,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (run_dir / f"{service.name}.pid").write_text(str(process.pid))
        _wait(service, process, timeout_s, log_dir)
        echo(f"  started   {service.where}   (log: {log_dir / (service.name + '.log')})")


def _wait(service: Service, process: subprocess.Popen[bytes], timeout_s: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LLMOpsError(
                f"{service.name} exited with code {process.returncode}; "
                f"see {logs / (service.name + '.log')}"
            )
        if service.health_url is None or _answers(service.health_url):
            return
        time.sleep(0.3)
    raise LLMOpsError(f"{service.name} did not answer within {timeout_s:.0f} s")


def down(data_dir: Path, *, grace_s: float = 20, echo: Callable[[str], None] = print) -> int:
    """Stop every service started by :func:`up`, in reverse order; how many were running."""
    run_dir = data_dir / "run"
    stopped = 0
    for service in reversed(services(Ports())):
        pid = _pid(run_dir, service.name)
        (run_dir / f"{service.name}.pid").unlink(missing_ok=True)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        stopped += 1
        echo(f"  stopped   {service.name}")
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours still "exists": reap it if it is our child.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def status(data_dir: Path) -> dict[str, int | None]:
    """The pid of each service that is running, ``None`` for the others."""
    return {s.name: _pid(data_dir / "run", s.name) for s in services(Ports())}
