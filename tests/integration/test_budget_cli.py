"""``llmops caps set|list|delete`` on a real ops DB (SQLite and Postgres)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from llmops.cli_caps import caps_app
from llmops.db.engine import make_engine
from llmops.gateway.budget import BudgetManager
from llmops.settings import get_settings


@pytest.fixture
def use_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def caps(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setenv("LLMOPS_DATABASE_URL", url)
    get_settings.cache_clear()
    return CliRunner().invoke(caps_app, list(args), prog_name="llmops caps")


@pytest.mark.usefixtures("use_db")
def test_set_then_list_shows_each_cap_with_its_window(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    daily = ["--tenant", "acme", "--limit-usd", "10", "--period", "day"]
    done = caps(migrated_db_url, monkeypatch, "set", *daily)
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "cap set: tenant:acme day hard $10.00"
    pair = ["--tenant", "acme", "--feature", "chat", "--limit-usd", "2.5", "--period", "month"]
    assert caps(migrated_db_url, monkeypatch, "set", *pair, "--mode", "soft").exit_code == 0

    engine = make_engine(migrated_db_url)
    try:
        budget = BudgetManager(engine)
        held = budget.reserve(
            request_id="r1", tenant_id="acme", feature_id="chat", amount_usd=Decimal("3")
        )
        budget.settle(held, Decimal("2.25"))
        budget.reserve(request_id="r2", tenant_id="acme", feature_id="x", amount_usd=Decimal("1"))
    finally:
        engine.dispose()

    listed = caps(migrated_db_url, monkeypatch, "list")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "scope",
        "period",
        "mode",
        "limit",
        "spent",
        "reserved",
        "remaining",
        "%",
        "used",
    ]
    assert [row.split() for row in rows] == [
        ["tenant:acme", "day", "hard", "$10.00", "$2.25", "$1.00", "$6.75", "22.5%"],
        ["tenant:acme/feature:chat", "month", "soft", "$2.50", "$2.25", "$0.00", "$0.25", "90.0%"],
    ]

    again = caps(migrated_db_url, monkeypatch, "set", *daily[:3], "20", *daily[4:])
    assert again.exit_code == 0
    assert "$20.00" in caps(migrated_db_url, monkeypatch, "list").stdout.splitlines()[1]

    gone = caps(migrated_db_url, monkeypatch, "delete", "--tenant", "acme", "--period", "day")
    assert gone.exit_code == 0 and "deleted" in gone.stdout
    assert len(caps(migrated_db_url, monkeypatch, "list").stdout.splitlines()) == 2
    missing = caps(migrated_db_url, monkeypatch, "delete", "--tenant", "acme", "--period", "day")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: no day cap on tenant:acme"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "a", "--limit-usd", "0", "--period", "day"], "limit_usd must be positive"),
        (["--tenant", "a", "--limit-usd", "-5", "--period", "day"], "must not be negative"),
        (["--tenant", "a", "--limit-usd", "ten", "--period", "day"], "finite amount in USD"),
        (["--tenant", "a", "--limit-usd", "nan", "--period", "day"], "finite amount in USD"),
        (["--limit-usd", "10", "--period", "day"], "needs a tenant, a feature or both"),
        (["--tenant", "a", "--limit-usd", "10", "--period", "week"], "period must be one of"),
        (["--tenant", "a", "--limit-usd", "10", "--period", "day", "--mode", "x"], "mode must"),
        (["--tenant", "a/b", "--limit-usd", "10", "--period", "day"], "without '/'"),
        (["--tenant", "a", "--period", "day"], "--limit-usd is required"),
        (["--tenant", "a", "--limit-usd", "10"], "--period is required"),
    ],
)
@pytest.mark.usefixtures("use_db")
def test_bad_input_is_one_line_and_exit_code_1(
    args: list[str], message: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = caps(sqlite_url, monkeypatch, "set", *args)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # checked before the DB


@pytest.mark.usefixtures("use_db")
def test_an_uninitialized_database_says_to_run_init(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = caps(sqlite_url, monkeypatch, "list")
    assert result.exit_code == 1
    assert "run `llmops init` first" in result.stderr


def test_importing_the_commands_loads_no_database_code() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, llmops.cli_caps\n"
            "print([m for m in ('sqlalchemy', 'sqlmodel', 'llmops.gateway.budget') "
            "if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
