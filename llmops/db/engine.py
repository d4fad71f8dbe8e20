"""The ops DB engine: the one place that knows SQLite from Postgres.

SQLite (the default, a file under the data directory) gets WAL so readers never block the
writer, a 30 s busy timeout so concurrent writers wait instead of failing, and foreign
keys on. Its transactions keep pysqlite's default: ``BEGIN`` is sent lazily before the
first write, so a transaction takes the write lock at its first write and waits for it
up to the busy timeout. Postgres gets pre-ping (a restarted server costs one reconnect,
not an error) and a connect timeout so a wrong host fails in seconds.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import URL, Connection, Engine, Table, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlmodel import Session

from llmops.errors import ConfigError, DatabaseUnavailable
from llmops.settings import Settings, get_settings

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "POSTGRES_CONNECT_TIMEOUT_S",
    "SQLITE_BUSY_TIMEOUT_MS",
    "bulk_insert",
    "check_connection",
    "connect",
    "describe_url",
    "engine_from_settings",
    "make_engine",
    "session_scope",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 5
_HINT = "set LLMOPS_DATABASE_URL"


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url`` (SQLite or ``postgresql+psycopg``), tuned for its backend."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        return _postgres_engine(parsed)
    raise ConfigError(
        "LLMOPS_DATABASE_URL",
        "backend",
        f"unsupported database {backend!r}: use sqlite or postgresql",
    )


def engine_from_settings(settings: Settings | None = None) -> Engine:
    """The engine for the configured ops DB (``settings.resolved_database_url``)."""
    return make_engine((settings or get_settings()).resolved_database_url)


def check_connection(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` with a one-line reason unless the DB answers."""
    with connect(engine) as connection:
        connection.execute(text("SELECT 1"))


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """``engine.connect()``, but failing to connect raises :class:`DatabaseUnavailable`."""
    try:
        connection = engine.connect()
    except (DBAPIError, OSError) as exc:
        raise DatabaseUnavailable(_unavailable_message(engine.url, exc)) from exc
    with connection:
        yield connection


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    Objects stay readable after the block (``expire_on_commit=False``), so a function can
    return the rows it wrote without a second round trip.
    """
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def bulk_insert(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table`` in the connection's
    transaction: ``COPY`` on Postgres, one DB-API ``executemany`` on SQLite.

    Each value goes through its column's type first (``Money`` quantized, and text on
    SQLite; ``UTCDateTime`` checked aware, stored UTC), exactly as an ORM insert binds it;
    what is skipped is SQLAlchemy's per-row statement work, and with it the model's Python
    defaults: give every column that has no server default. Returns the rows inserted.
    """
    dialect = connection.dialect
    data = [list(values) for values in zip(*rows, strict=True)]  # column by column
    if not data:
        return 0
    if len(data) != len(columns):
        raise ValueError(f"rows have {len(data)} values, not one per column of {columns}")
    for i, name in enumerate(columns):
        bind = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if bind is not None:
            data[i] = _bind_all(bind, data[i])
    bound = list(zip(*data, strict=True))
    names = ", ".join(columns)
    if dialect.name == "postgresql":
        dbapi = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
        sql = f"COPY {table.name} ({names}) FROM STDIN"
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            for row in bound:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", bound)
    return len(bound)


def _bind_all(bind: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """``bind`` applied to each value, once per distinct value: windows and stamps repeat
    across a batch. Keyed by type too, or a float equal to a Decimal seen before would
    slip past Money's refusal of floats."""
    memo: dict[tuple[type, Any], Any] = {}
    out = []
    for value in values:
        if isinstance(value, list | dict):  # a JSON column's value: not hashable
            out.append(bind(value))
            continue
        key = (type(value), value)
        if key not in memo:
            memo[key] = bind(value)
        out.append(memo[key])
    return out


def describe_url(url: str | URL) -> str:
    """Where a URL points, without credentials: ``host:port/db`` or the SQLite path."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    host = parsed.host or parsed.query.get("host") or "localhost"
    return f"{host}:{parsed.port or 5432}/{parsed.database or ''}"


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # The message would echo the URL, password included: keep only the shape.
        raise ConfigError(
            "LLMOPS_DATABASE_URL",
            "url",
            "not a database URL (expected sqlite:///path or "
            "postgresql+psycopg://user@host:port/db)",
        ) from exc
    # Plain postgresql:// (or postgres://) means psycopg2 to SQLAlchemy, which is not
    # installed; psycopg 3 is the driver this project ships.
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername.startswith("postgresql+") and parsed.drivername != "postgresql+psycopg":
        raise ConfigError(
            "LLMOPS_DATABASE_URL",
            "driver",
            f"{parsed.drivername} is not supported: use postgresql+psycopg://",
        )
    return parsed


def _sqlite_engine(url: URL) -> Engine:
    path = url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        try:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(_unavailable_message(url, exc)) from exc
    # Pooled connections cross threads (the gateway's thread pool, Prefect task runners).
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        # Under WAL, NORMAL is durable against application crashes and much faster than
        # FULL; a power loss can lose the last commits but never corrupts the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # A new file only becomes WAL at its first write. Until then another process that
    # holds the write lock makes this pragma fail at once: SQLite skips the busy handler
    # for this lock to avoid a deadlock, so wait here the way the busy timeout would.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {"application_name": "llmops"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _unavailable_message(url: URL, exc: BaseException) -> str:
    where = describe_url(url)
    if url.get_backend_name() == "sqlite":
        message = f"cannot open the ops database at {where}: {_reason(exc)} ({_HINT})"
    else:
        message = f"cannot reach the ops database at {where}: {_reason(exc)} ({_HINT})"
    # Drivers do not echo passwords today; make sure one never reaches a log line.
    return message.replace(url.password, "***") if url.password else message


# psycopg prefixes every failure with where it happened, which the message already says.
_PREFIXES = re.compile(
    r'^(connection failed: )?(connection to server at "[^"]*"( \([^)]*\))?, port \d+ failed: )?'
    r"(FATAL:\s+)?"
)


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    reason = _PREFIXES.sub("", lines[0]) if lines else type(original).__name__
    reason = reason or type(original).__name__
    return reason[0].lower() + reason[1:]


@contextmanager
def write_transaction(
    engine: Engine, local_writer: threading.Lock, what: str
) -> Iterator[Connection]:
    """A transaction that commits on success and holds what it reads until then. On SQLite
    it takes the write lock up front (``BEGIN IMMEDIATE``), after ``local_writer``: threads
    of one process queue there rather than polling the file lock (SQLite's busy handler
    sleeps up to 100 ms and so wastes a free lock under load). A lost database or a lock
    held past the busy timeout raises :class:`DatabaseUnavailable` naming ``what``."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                with local_writer:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.rollback()
                        raise
                    conn.commit()
            else:
                with conn.begin():
                    yield conn
    except OperationalError as exc:
        raise _unavailable(exc, what) from exc


@contextmanager
def read_connection(engine: Engine, what: str) -> Iterator[Connection]:
    """A connection for reads outside any write lock; failures as in :func:`write_transaction`."""
    try:
        with engine.connect() as conn:
            yield conn
    except OperationalError as exc:
        raise _unavailable(exc, what) from exc


def _unavailable(exc: OperationalError, what: str) -> DatabaseUnavailable:
    # "database is locked" past the busy timeout, or a lost server: one line.
    reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
    return DatabaseUnavailable(f"{what} unavailable: {reason}")
