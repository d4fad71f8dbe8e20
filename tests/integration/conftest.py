"""Ops DB fixtures for integration tests, on SQLite always and on Postgres when configured.

Postgres tests run only when ``LLMOPS_TEST_DATABASE_URL`` is set, for example
``postgresql+psycopg://postgres@127.0.0.1:5432/test``. That URL is used only as an admin
connection: each test gets its own freshly created database (about 40 ms), dropped
``WITH (FORCE)`` afterwards, so no test depends on what another test or an earlier run
left behind. The user in the URL needs the CREATEDB privilege.

Fixtures, from raw to ready:

- ``sqlite_url``: a SQLite file URL in the test's ``tmp_path``; nothing created yet.
- ``postgres_url``: a new empty Postgres database (skipped without the variable).
- ``db_url``: parametrized over both backends (``[sqlite]``, ``[postgres]``); empty.
- ``migrated_db_url``: ``db_url`` upgraded to head.
- ``db_engine``: an engine from ``make_engine`` on ``migrated_db_url``; disposed after.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, make_url

from llmops.db.engine import check_connection, make_engine
from llmops.db.migrate import upgrade

if TYPE_CHECKING:
    from llmops.gateway.config import GatewayConfig
    from llmops.gateway.core import Gateway

POSTGRES_ENV = "LLMOPS_TEST_DATABASE_URL"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that asks for Postgres directly is a postgres test (``-m "not postgres"``).
    for item in items:
        if {"postgres_url", "postgres_admin_engine"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file in this test's ``tmp_path`` (not created, not migrated)."""
    return f"sqlite:///{tmp_path / 'ops.db'}"


@pytest.fixture(scope="session")
def postgres_admin_engine() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on ``LLMOPS_TEST_DATABASE_URL``; skips the test when unset."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"Postgres tests need {POSTGRES_ENV}=postgresql+psycopg://...")
    engine = make_engine(admin_url)
    # Set but unreachable is a broken setup, not a reason to skip: fail with the reason.
    check_connection(engine)
    yield engine.execution_options(isolation_level="AUTOCOMMIT")
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin_engine: Engine) -> Iterator[str]:
    """URL of a new, empty Postgres database for this test; dropped WITH (FORCE) after."""
    name = f"llmops_test_{os.getpid()}_{secrets.token_hex(4)}"
    with postgres_admin_engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_engine.url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with postgres_admin_engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL on each backend: SQLite always, Postgres when configured."""
    # Looked up lazily so the [sqlite] case never touches (or skips on) Postgres.
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def migrated_db_url(db_url: str) -> str:
    """``db_url`` upgraded to the head revision."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def db_engine(migrated_db_url: str) -> Iterator[Engine]:
    """An engine (``make_engine``) on a fresh database at head, on each backend."""
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
async def make_gateway(db_engine: Engine) -> AsyncIterator[Callable[..., Gateway]]:
    """A factory of gateways on this test's database; their request-log writers, rate
    limiters and caches are closed after the test."""
    from llmops.gateway.core import Gateway

    made: list[Gateway] = []

    def make(config: GatewayConfig, **options: Any) -> Gateway:
        gateway = Gateway(config, db_engine, **options)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.aclose()


REDIS_ENV = "LLMOPS_TEST_REDIS_URL"
REDIS_DEFAULT = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis for the Redis backend tests: ``LLMOPS_TEST_REDIS_URL`` or database 15 on the
    local server; skipped when neither answers, failed when the variable names a dead one."""
    import redis

    url = os.environ.get(REDIS_ENV) or REDIS_DEFAULT
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get(REDIS_ENV):
            pytest.fail(f"{REDIS_ENV}={url} is set but Redis does not answer: {exc}")
        pytest.skip(f"Redis tests need a Redis at {url} (or set {REDIS_ENV}): {exc}")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"llmops:test:{secrets.token_hex(6)}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def cli_env(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """A factory of environments for running ``llmops`` as a subprocess, as a new user:
    no inherited LLMOPS_/PREFECT_ settings, data under ``tmp_path``, and a one-group
    gateway config (``fast``, priced) pointing at the simulator at ``base_url``."""
    import yaml

    def make(base_url: str) -> dict[str, str]:
        deployment = {
            "id": "sim-mini",
            "model": "openai/gpt-4o-mini",
            "api_base": base_url,
            "api_key": "sk-sim",
        }
        config = {
            "settings": {"timeout_s": 10, "num_retries": 0},
            "model_groups": {"fast": {"deployments": [deployment]}},
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}
            ],
        }
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PREFECT_"))}
        env["LLMOPS_DATA_DIR"] = str(tmp_path / "data")
        env["LLMOPS_GATEWAY_CONFIG"] = str(tmp_path / "gateway.yaml")
        return env

    return make


#: The console script a user runs, next to this interpreter.
LLMOPS = Path(sys.executable).parent / "llmops"
REPO = Path(__file__).resolve().parents[2]
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_llmops() -> Runner:
    """Run ``llmops ARGS`` from the repo folder with an environment, as a user would."""

    def run(
        env: dict[str, str], *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LLMOPS), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
