"""Migrations go up, down and up again on both backends, and agree with the models."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel, select

from llmops.db.engine import make_engine, session_scope
from llmops.db.migrate import current_revision, downgrade, head_revision, schema_diff, upgrade
from llmops.db.models import Tenant

MODEL_TABLES = set(SQLModel.metadata.tables)


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_creates_every_table_and_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert _tables(engine) == MODEL_TABLES | {"alembic_version"}
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_down_to_base_drops_everything_and_up_again_restores_it(db_url: str) -> None:
    upgrade(db_url)
    downgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert _tables(engine) == {"alembic_version"}
        upgrade(engine)
        assert _tables(engine) == MODEL_TABLES | {"alembic_version"}
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_upgrade_on_a_migrated_database_is_a_no_op(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add(Tenant(id="t1", name="Acme"))
    upgrade(db_engine)
    upgrade(db_engine.url.render_as_string(hide_password=False))
    assert current_revision(db_engine) == head_revision()
    with session_scope(db_engine) as session:
        assert session.exec(select(Tenant.name)).all() == ["Acme"]


def test_concurrent_upgrades_from_separate_processes_both_succeed(
    db_url: str, tmp_path: Path
) -> None:
    # Each process imports first, then waits for "go", so the two upgrades truly overlap
    # instead of being serialized by interpreter start-up time.
    script = (
        "import sys, time, pathlib\n"
        "from llmops.db.migrate import upgrade\n"
        "folder = pathlib.Path(sys.argv[2])\n"
        "(folder / ('ready-' + sys.argv[3])).touch()\n"
        "while not (folder / 'go').exists():\n"
        "    time.sleep(0.005)\n"
        "upgrade(sys.argv[1])\n"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url, str(tmp_path), str(index)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outcomes = [(run.communicate(timeout=120)[1], run.returncode) for run in runs]
    assert [code for _, code in outcomes] == [0, 0], outcomes
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_schema_diff_reports_drift_from_the_models(db_engine: Engine) -> None:
    # Guards the guard: if drift went unnoticed, "no diff" above would prove nothing.
    with db_engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE eval_results")
        operations = Operations(MigrationContext.configure(connection))
        with operations.batch_alter_table("request_log") as batch:
            batch.alter_column("cost_usd", type_=sa.Float())
    diff = schema_diff(db_engine)
    assert ("eval_results", "add_table") in [
        (entry[1].name, entry[0]) for entry in diff if isinstance(entry, tuple)
    ]
    modified = [change for entry in diff if isinstance(entry, list) for change in entry]
    assert [(change[0], change[2], change[3]) for change in modified] == [
        ("modify_type", "request_log", "cost_usd")
    ]
