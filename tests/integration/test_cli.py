"""The ``llmops`` command as a user runs it: a real subprocess, a fresh data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import create_engine, text

Runner = Callable[..., subprocess.CompletedProcess[str]]  # the run_llmops fixture

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PREFECT_"))}
    env["LLMOPS_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_help_lists_commands_without_importing_heavy_libraries(
    user_env: dict[str, str], run_llmops: Runner
) -> None:
    result = run_llmops(user_env, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("init", "demo", "sim"):
        assert command in result.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from llmops.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('litellm', 'prefect', 'great_expectations', 'duckdb') "
            "if m in sys.modules]\nprint('HEAVY', heavy)",
        ],
        cwd=REPO,
        env=user_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "HEAVY []" in probe.stdout


def test_init_is_safe_to_run_twice(
    user_env: dict[str, str], tmp_path: Path, run_llmops: Runner
) -> None:
    for _ in range(2):
        result = run_llmops(user_env, "init")
        assert result.returncode == 0, result.stderr
        assert "ops database ready" in result.stdout
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'ops.db'}")
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    assert version


def test_unreachable_database_is_one_line_naming_the_host(
    user_env: dict[str, str], run_llmops: Runner
) -> None:
    user_env["LLMOPS_DATABASE_URL"] = "postgresql+psycopg://ops:hunter2@127.0.0.1:1/ops"
    result = run_llmops(user_env, "init", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "127.0.0.1:1" in lines[0]
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_gateway_config_names_file_field_and_reason(
    user_env: dict[str, str], tmp_path: Path, run_llmops: Runner
) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        "model_groups:\n  fast:\n    deployments:\n"
        "      - {id: a, model: openai/unpriced-model}\nprices: []\n"
    )
    user_env["LLMOPS_GATEWAY_CONFIG"] = str(bad)
    result = run_llmops(user_env, "demo", "--requests", "3", timeout=120)
    assert result.returncode == 1
    assert str(bad) in result.stderr
    assert "model_groups.fast.deployments[0].model" in result.stderr
    assert "no price" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_end_to_end_and_idempotent(
    user_env: dict[str, str], tmp_path: Path, run_llmops: Runner
) -> None:
    first = run_llmops(user_env, "demo", "--requests", "40")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    assert str(warehouse) in first.stdout
    assert "40/40 requests ok" in first.stdout
    for heading in ("tenant_id", "feature_id", "model", "calls", "cost_usd", "p50_ms", "p95_ms"):
        assert heading in first.stdout

    second = run_llmops(user_env, "demo", "--requests", "40")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "40/40 requests ok" in second.stdout

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            "SELECT count(*), count(DISTINCT action_id), sum(cost_usd) FROM request_log"
        ).fetchall()
    finally:
        con.close()
    calls, actions, cost = rows[0]
    assert actions == 40  # the second run made no new calls for the same requests
    assert calls >= 40 and cost > 0
    ops = create_engine(f"sqlite:///{tmp_path / 'data' / 'ops.db'}")
    with ops.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request_log")).scalar_one() == calls
        assert conn.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 3
    ops.dispose()
