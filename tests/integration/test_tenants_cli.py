"""``llmops tenants`` as an operator runs it: the console script, a fresh data directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from llmops.db.engine import make_engine
from llmops.errors import AuthError
from llmops.tenants import TenantAuthenticator

Runner = Callable[..., subprocess.CompletedProcess[str]]  # the run_llmops fixture

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("litellm", "prefect", "great_expectations", "duckdb", "sqlmodel", "uvicorn", "fastapi")


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PREFECT_"))}
    env["LLMOPS_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def ops_db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'ops.db'}")
    yield engine
    engine.dispose()


def authenticate(engine: Engine, key: str) -> str:
    """The tenant id of ``key``, read from the database now (no cache from earlier checks)."""
    return TenantAuthenticator(engine).authenticate(key).id


def test_create_list_revoke(user_env: dict[str, str], ops_db: Engine, run_llmops: Runner) -> None:
    assert run_llmops(user_env, "init").returncode == 0

    created = run_llmops(
        user_env, "tenants", "create", "Acme Corp", "--plan", "pro", "--stripe-customer", "cus_1"
    )
    assert created.returncode == 0, created.stderr
    (key,) = re.findall(r"llm_[A-Za-z0-9_-]{40}", created.stdout)
    assert "will not be shown again" in created.stderr
    assert authenticate(ops_db, key) == "acme-corp"

    other = run_llmops(user_env, "tenants", "create", "Globex", "--id", "globex")
    assert other.returncode == 0, other.stderr
    duplicate = run_llmops(user_env, "tenants", "create", "Acme again", "--id", "acme-corp")
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip().splitlines() == ["error: tenant 'acme-corp' already exists"]

    listed = run_llmops(user_env, "tenants", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "name", "key"]
    (acme,) = [line for line in lines if line.startswith("acme-corp")]
    assert key[:12] in acme and key not in listed.stdout
    assert "pro" in acme and "cus_1" in acme and "active" in acme
    assert any(line.startswith("globex") for line in lines)

    revoked = run_llmops(user_env, "tenants", "revoke", "acme-corp")
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(AuthError, match="revoked"):
        authenticate(ops_db, key)
    assert "revoked" in next(
        line
        for line in run_llmops(user_env, "tenants", "list").stdout.splitlines()
        if line.startswith("acme-corp")
    )


def test_rotate_key_prints_a_new_working_key(
    user_env: dict[str, str], ops_db: Engine, run_llmops: Runner
) -> None:
    assert run_llmops(user_env, "init").returncode == 0
    created = run_llmops(user_env, "tenants", "create", "Acme", "--id", "acme")
    (old,) = re.findall(r"llm_[A-Za-z0-9_-]{40}", created.stdout)
    rotated = run_llmops(user_env, "tenants", "rotate-key", "acme")
    assert rotated.returncode == 0, rotated.stderr
    (new,) = re.findall(r"llm_[A-Za-z0-9_-]{40}", rotated.stdout)
    assert authenticate(ops_db, new) == "acme"
    with pytest.raises(AuthError):
        authenticate(ops_db, old)


def test_commands_on_an_uninitialized_database_say_to_run_init(
    user_env: dict[str, str], run_llmops: Runner
) -> None:
    result = run_llmops(user_env, "tenants", "list")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "llmops init" in lines[0]


@pytest.mark.parametrize("app", ["tenants_app", "gateway_app"])
def test_help_imports_nothing_heavy(user_env: dict[str, str], app: str) -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from llmops.cli_gateway import {app}\n"
            f"try:\n    {app}(['serve' if '{app}' == 'gateway_app' else 'create', '--help'])\n"
            "except SystemExit:\n    pass\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])",
        ],
        cwd=REPO,
        env=user_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--help" in probe.stdout or "Usage" in probe.stdout
    assert "HEAVY []" in probe.stdout
