"""``make serve`` as a user runs it: the stack comes up, ``prefect deploy --all`` works
against its server, a run started through the API the UI uses is executed by the worker,
a parameter of the wrong type is refused, and ``make stop`` ends everything."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import LLMOPS, REPO, Runner

PREFECT = LLMOPS.parent / "prefect"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_run(api: httpx.Client, run_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run: dict[str, Any] = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout_s} s")


def test_serve_deploy_run_and_stop(tmp_path: Path, run_llmops: Runner) -> None:
    ports = {"prefect": _free_port(), "sim": _free_port(), "gateway": _free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PREFECT_"))}
    env |= {
        "LLMOPS_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    up = run_llmops(
        env,
        "stack",
        "up",
        f"--prefect-port={ports['prefect']}",
        f"--sim-port={ports['sim']}",
        f"--gateway-port={ports['gateway']}",
        timeout=600,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Prefect UI and API  http://127.0.0.1:{ports['prefect']}" in up.stdout
        base = f"http://127.0.0.1:{ports['prefect']}"
        assert httpx.get(base + "/").status_code == 200  # the UI is served
        assert httpx.get(f"http://127.0.0.1:{ports['gateway']}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['sim']}/healthz").status_code == 200

        deploy_env = env | {"PREFECT_API_URL": base + "/api"}
        deployed = subprocess.run(
            [str(PREFECT), "--no-prompt", "deploy", "--all"],
            cwd=REPO,
            env=deploy_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

        with httpx.Client(base_url=base + "/api", timeout=30) as api:
            deployment = api.get("/deployments/name/warehouse-load/warehouse-load").json()
            schema = deployment["parameter_openapi_schema"]["properties"]["settle_minutes"]
            assert schema["type"] == "integer" and schema["default"] == 5
            assert "watermark" in schema["description"]  # the UI form explains the field
            assert deployment["schedules"][0]["schedule"]["cron"] == "*/15 * * * *"

            bad = api.post(
                f"/deployments/{deployment['id']}/create_flow_run",
                json={"parameters": {"settle_minutes": "soon"}},
            )
            assert bad.status_code in (409, 422), bad.text
            assert "settle_minutes" in bad.text or "soon" in bad.text

            run = (
                api.post(
                    f"/deployments/{deployment['id']}/create_flow_run",
                    json={"parameters": {"settle_minutes": 0}},
                )
                .raise_for_status()
                .json()
            )
            finished = _wait_for_run(api, run["id"])
            log = (tmp_path / "data" / "logs" / "worker.log").read_text()[-4000:]
            assert finished["state"]["type"] == "COMPLETED", log
    finally:
        down = run_llmops(env, "stack", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert "stopped   prefect-server" in down.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['prefect']}/api/health")
