"""The engine factory: SQLite tuning, Postgres failures as one clear line, sessions."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from llmops.db.engine import (
    POSTGRES_CONNECT_TIMEOUT_S,
    SQLITE_BUSY_TIMEOUT_MS,
    check_connection,
    make_engine,
    session_scope,
)
from llmops.db.models import Feature, Job
from llmops.errors import DatabaseUnavailable


def _pragma(engine: Engine, name: str) -> object:
    with engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_engine_creates_the_folder_and_sets_its_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'deeper' / 'ops.db'}")
    try:
        check_connection(engine)
        assert (tmp_path / "nested" / "deeper" / "ops.db").is_file()
        assert _pragma(engine, "journal_mode") == "wal"
        assert _pragma(engine, "foreign_keys") == 1
        assert _pragma(engine, "busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
        assert _pragma(engine, "synchronous") == 1  # NORMAL
    finally:
        engine.dispose()


def test_sqlite_connections_can_move_between_threads(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        check_connection(engine)  # the pooled connection is created on this thread
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(_pragma, engine, "foreign_keys").result() == 1
    finally:
        engine.dispose()


def test_foreign_keys_are_enforced(db_engine: Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(Job(id="job_1", tenant_id="no-such-tenant", feature_id="f"))


def test_session_scope_commits_on_success_and_rolls_back_on_error(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add(Feature(id="summarize"))
    with pytest.raises(RuntimeError), session_scope(db_engine) as session:
        session.add(Feature(id="translate"))
        session.flush()
        raise RuntimeError("caller failed after writing")
    with session_scope(db_engine) as session:
        assert session.exec(select(Feature.id)).all() == ["summarize"]


def test_rows_stay_readable_after_the_session_closes(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        feature = Feature(id="summarize", description="one paragraph")
        session.add(feature)
    assert feature.description == "one paragraph"


def test_unreachable_postgres_is_one_line_naming_host_port_without_password() -> None:
    engine = make_engine("postgresql+psycopg://u:secret@127.0.0.1:1/x")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        check_connection(engine)
    # A hang guard, not a benchmark: a refused port answers at once.
    assert time.monotonic() - started < POSTGRES_CONNECT_TIMEOUT_S
    message = str(caught.value)
    assert message == (
        "cannot reach the ops database at 127.0.0.1:1/x: connection refused "
        "(set LLMOPS_DATABASE_URL)"
    )
    assert "secret" not in message and "\n" not in message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections but never answers, like a dead server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_server_that_never_answers_times_out(silent_port: int) -> None:
    engine = make_engine(
        f"postgresql+psycopg://u:secret@127.0.0.1:{silent_port}/x?connect_timeout=1"
    )
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        check_connection(engine)
    assert time.monotonic() - started < 1 + POSTGRES_CONNECT_TIMEOUT_S
    message = str(caught.value)
    assert message.startswith(f"cannot reach the ops database at 127.0.0.1:{silent_port}/x: ")
    assert "timeout" in message
    assert "secret" not in message and "\n" not in message


def test_a_sqlite_path_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}")  # a directory, not a file
    with pytest.raises(DatabaseUnavailable) as caught:
        check_connection(engine)
    assert str(caught.value) == (
        f"cannot open the ops database at {tmp_path}: unable to open database file "
        "(set LLMOPS_DATABASE_URL)"
    )


def test_a_sqlite_folder_that_cannot_be_created_is_database_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="cannot open the ops database at "):
        make_engine(f"sqlite:///{blocker / 'ops.db'}")


def test_postgres_wrong_database_names_it(postgres_url: str) -> None:
    engine = make_engine(postgres_url.rsplit("/", 1)[0] + "/llmops_no_such_database")
    with pytest.raises(DatabaseUnavailable) as caught:
        check_connection(engine)
    assert str(caught.value).endswith(
        '/llmops_no_such_database: database "llmops_no_such_database" does not exist '
        "(set LLMOPS_DATABASE_URL)"
    )


def test_check_connection_passes_on_a_live_database(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        check_connection(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_opening_a_new_file_waits_for_another_process_holding_the_write_lock(
    tmp_path: Path,
) -> None:
    # A brand-new file is not WAL until its first write; while someone else holds the
    # write lock, switching it fails at once unless the engine waits (seen with two
    # processes running the first migration together).
    path = tmp_path / "ops.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, holder.execute, ["COMMIT"])
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        check_connection(engine)
        assert _pragma(engine, "journal_mode") == "wal"
    finally:
        release.join()
        holder.close()
        engine.dispose()
