"""SQL for spend caps: write transactions, ledger row locks, upserts (SQLite and Postgres).

The ops DB is the arbiter of every cap, so each read-check-write of the ledger runs in
one transaction that holds the ledger rows it reads until it commits:

- SQLite: ``BEGIN IMMEDIATE`` takes the database write lock before the first read
  (pysqlite would otherwise send a lazy ``BEGIN`` before the first write, letting two
  transactions read the same balance). Writers queue on the lock, across threads and
  processes, for up to the engine's busy timeout. A process-local mutex in front of it
  makes threads of one process queue fairly instead of polling the file lock.
- Postgres: READ COMMITTED with ``SELECT ... FOR UPDATE`` of the ledger rows, all in
  one statement ordered by cap id, so two transactions lock shared rows in the same
  order and never deadlock. Missing rows are created first in a short transaction of
  their own (``INSERT ... ON CONFLICT DO NOTHING``), never while holding row locks.

Money is TEXT on SQLite, so no SQL here compares or adds money: callers read the rows,
do Decimal arithmetic in Python and write the results back inside the same transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    delete,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from llmops.db import models as _models  # noqa: F401  (registers the tables)
from llmops.db.engine import read_connection, write_transaction
from llmops.db.types import UTCDateTime
from llmops.errors import BudgetExceeded
from llmops.gateway.budget_types import ALERT_THRESHOLDS, BudgetAlert, CapSpec, format_usd

CAPS: Table = SQLModel.metadata.tables["spend_caps"]
LEDGER: Table = SQLModel.metadata.tables["budget_ledger"]
RESERVATIONS: Table = SQLModel.metadata.tables["budget_reservations"]
LEASES: Table = SQLModel.metadata.tables["budget_leases"]

ZERO = Decimal(0)

#: A ledger row with its cap, as :class:`LedgerRow` holds it.
_LEDGER_COLUMNS = (
    LEDGER.c.id,
    LEDGER.c.cap_id,
    LEDGER.c.window_start,
    LEDGER.c.spent_usd,
    LEDGER.c.reserved_usd,
    LEDGER.c.alerted_pct,
    CAPS.c.scope_key,
    CAPS.c.period,
    CAPS.c.limit_usd,
    CAPS.c.mode,
)

#: A ledger row is identified by its cap and the start of the cap's period window.
LedgerKey = tuple[int, datetime]


@dataclass
class LedgerRow:
    """One ``budget_ledger`` row joined with its cap, as read under lock."""

    id: int
    cap_id: int
    window_start: datetime
    spent_usd: Decimal
    reserved_usd: Decimal
    alerted_pct: int
    scope_key: str
    period: str
    limit_usd: Decimal
    mode: str


class LedgerStore:
    """Transactions and statements on the budget tables of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Serializes this process's SQLite writers in front of the file lock, whose busy
        # handler polls with sleeps of up to 100 ms and so wastes a free lock under load.
        self._local_writer = threading.Lock()
        # Built once: constructing a statement costs more than running it on SQLite.
        self._save = (
            update(LEDGER)
            .where(LEDGER.c.id == bindparam("b_id"))
            .values(
                spent_usd=bindparam("b_spent"),
                reserved_usd=bindparam("b_reserved"),
                alerted_pct=bindparam("b_alerted"),
                updated_at=bindparam("b_now"),
            )
        )
        self._lock_ids = (
            select(*_LEDGER_COLUMNS)
            .join(CAPS, CAPS.c.id == LEDGER.c.cap_id)
            .where(LEDGER.c.id.in_(bindparam("ids", expanding=True)))
            .order_by(LEDGER.c.cap_id, LEDGER.c.window_start)
            .with_for_update(of=LEDGER)
        )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on success and holds what it reads until then."""
        with write_transaction(self.engine, self._local_writer, "budget ledger") as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for single-statement reads (each statement sees one snapshot)."""
        with read_connection(self.engine, "budget ledger") as conn:
            yield conn

    def insert(self, table: Table) -> Any:
        """``INSERT`` with ``on_conflict_do_*`` for this dialect (the one place SQL differs)."""
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        return postgresql.insert(table)

    # -- ledger rows -------------------------------------------------------------------

    def lock_ledger(self, conn: Connection, keys: Iterable[LedgerKey]) -> list[LedgerRow]:
        """The ledger rows for ``keys`` with their caps, locked, ordered by cap id.

        Keys whose row does not exist (yet, or any more) are simply absent.
        """
        wanted = sorted(set(keys))
        if not wanted:
            return []
        stmt = (
            select(*_LEDGER_COLUMNS)
            .join(CAPS, CAPS.c.id == LEDGER.c.cap_id)
            .where(
                or_(
                    *(
                        and_(LEDGER.c.cap_id == cap_id, LEDGER.c.window_start == start)
                        for cap_id, start in wanted
                    )
                )
            )
            .order_by(LEDGER.c.cap_id, LEDGER.c.window_start)
            # Only the ledger rows: locking the caps too would block set_cap for no gain.
            .with_for_update(of=LEDGER)
        )
        return [LedgerRow(**row._mapping) for row in conn.execute(stmt)]

    def ensure_ledger(self, keys: Iterable[LedgerKey], now: datetime) -> None:
        """Create missing ledger rows in their own transaction (raises IntegrityError for
        a cap that no longer exists)."""
        rows = [
            {
                "cap_id": cap_id,
                "window_start": start,
                "spent_usd": ZERO,
                "reserved_usd": ZERO,
                "alerted_pct": 0,
                "updated_at": now,
            }
            for cap_id, start in sorted(set(keys))
        ]
        if not rows:
            return
        stmt = self.insert(LEDGER).on_conflict_do_nothing(index_elements=["cap_id", "window_start"])
        with self.write() as conn:
            for row in rows:  # one by one, in key order: the lock order of every writer
                conn.execute(stmt, row)

    def save_ledger(self, conn: Connection, rows: Iterable[LedgerRow], now: datetime) -> None:
        """Write back balances and alert marks of rows read by :meth:`lock_ledger`."""
        params = [
            {
                "b_id": row.id,
                "b_spent": row.spent_usd,
                "b_reserved": row.reserved_usd,
                "b_alerted": row.alerted_pct,
                "b_now": now,
            }
            for row in rows
        ]
        if not params:
            return
        conn.execute(self._save, params)

    def lock_ledger_ids(self, conn: Connection, ledger_ids: Iterable[int]) -> list[LedgerRow]:
        """As :meth:`lock_ledger`, for rows known by id (one prepared statement)."""
        ids = sorted(set(ledger_ids))
        if not ids:
            return []
        return [LedgerRow(**row._mapping) for row in conn.execute(self._lock_ids, {"ids": ids})]

    # -- caps ----------------------------------------------------------------------------

    def all_caps(self) -> list[dict[str, Any]]:
        """Every cap row, as plain dicts."""
        with self.read() as conn:
            return [dict(row._mapping) for row in conn.execute(select(CAPS).order_by(CAPS.c.id))]

    def upsert_cap(self, conn: Connection, spec: CapSpec, now: datetime) -> dict[str, Any]:
        """Insert the cap, or update the limit and mode of the one on its scope and period."""
        stmt = self.insert(CAPS).values(
            scope_key=spec.scope.key,
            tenant_id=spec.scope.tenant_id,
            feature_id=spec.scope.feature_id,
            period=spec.period,
            limit_usd=spec.limit_usd,
            mode=spec.mode,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["scope_key", "period"],
            set_={
                "limit_usd": stmt.excluded.limit_usd,
                "mode": stmt.excluded.mode,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        conn.execute(stmt)
        where = and_(CAPS.c.scope_key == spec.scope.key, CAPS.c.period == spec.period)
        return dict(conn.execute(select(CAPS).where(where)).one()._mapping)

    def delete_cap(self, scope_key: str, period: str) -> bool:
        """Delete a cap and its ledger rows; False when there was no such cap."""
        with self.write() as conn:
            # Lock the cap first: a concurrent first reservation of a window then fails its
            # foreign key check instead of leaving a ledger row that blocks the delete.
            cap_id = conn.execute(
                select(CAPS.c.id)
                .where(CAPS.c.scope_key == scope_key, CAPS.c.period == period)
                .with_for_update()
            ).scalar()
            if cap_id is None:
                return False
            conn.execute(delete(LEASES).where(LEASES.c.cap_id == cap_id))
            conn.execute(delete(LEDGER).where(LEDGER.c.cap_id == cap_id))
            conn.execute(delete(CAPS).where(CAPS.c.id == cap_id))
        return True

    def caps_in_windows(self, starts: dict[str, datetime]) -> list[dict[str, Any]]:
        """Every cap with the balances of the window starting at ``starts[period]``, in one
        statement (one consistent snapshot); spent and reserved are None before any use."""
        window = case(
            *(
                (CAPS.c.period == period, literal(start, UTCDateTime()))
                for period, start in starts.items()
            )
        )
        stmt = (
            select(CAPS, LEDGER.c.spent_usd, LEDGER.c.reserved_usd)
            .select_from(
                CAPS.outerjoin(
                    LEDGER, and_(LEDGER.c.cap_id == CAPS.c.id, LEDGER.c.window_start == window)
                )
            )
            .order_by(CAPS.c.scope_key, CAPS.c.period)
        )
        with self.read() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def cap_periods(self, conn: Connection, cap_ids: Iterable[int]) -> dict[int, str]:
        """The period of each cap that still exists among ``cap_ids``."""
        ids = sorted(set(cap_ids))
        if not ids:
            return {}
        stmt = select(CAPS.c.id, CAPS.c.period).where(CAPS.c.id.in_(ids))
        return {int(row.id): str(row.period) for row in conn.execute(stmt)}

    # -- reservations --------------------------------------------------------------------

    def lock_reservation(self, conn: Connection, reservation_id: str) -> dict[str, Any] | None:
        """The reservation row, locked until the transaction ends; None if unknown."""
        stmt = select(RESERVATIONS).where(RESERVATIONS.c.id == reservation_id).with_for_update()
        row = conn.execute(stmt).first()
        return dict(row._mapping) if row is not None else None

    def set_reservation_status(
        self,
        conn: Connection,
        reservation_ids: list[str],
        status: str,
        settled_usd: Decimal | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status}
        if settled_usd is not None:
            values["settled_usd"] = settled_usd
        conn.execute(
            update(RESERVATIONS).where(RESERVATIONS.c.id.in_(reservation_ids)).values(**values)
        )

    def any_stale(self, now: datetime) -> bool:
        """True when some held reservation expired before ``now`` (a lock-free read)."""
        stmt = (
            select(RESERVATIONS.c.id)
            .where(RESERVATIONS.c.status == "held", RESERVATIONS.c.expires_at < now)
            .limit(1)
        )
        with self.read() as conn:
            return conn.execute(stmt).first() is not None

    def lock_stale(self, conn: Connection, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` expired held reservations, locked; rows another transaction is
        settling right now are skipped (Postgres), it will find them settled or expired."""
        stmt = (
            select(RESERVATIONS)
            .where(RESERVATIONS.c.status == "held", RESERVATIONS.c.expires_at < now)
            .order_by(RESERVATIONS.c.expires_at, RESERVATIONS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [dict(row._mapping) for row in conn.execute(stmt)]


# -- decisions on locked rows ----------------------------------------------------------


def reaches(entry: LedgerRow, threshold: int) -> bool:
    return entry.spent_usd * 100 >= entry.limit_usd * threshold


def new_alerts(entry: LedgerRow) -> list[BudgetAlert]:
    """Alerts for thresholds the settled spend reached for the first time this window."""
    crossed = [t for t in ALERT_THRESHOLDS if t > entry.alerted_pct and reaches(entry, t)]
    if crossed:
        entry.alerted_pct = max(crossed)
    return [
        BudgetAlert(
            cap_id=entry.cap_id,
            scope_key=entry.scope_key,
            period=entry.period,
            window_start=entry.window_start,
            threshold_pct=threshold,
            spent_usd=entry.spent_usd,
            limit_usd=entry.limit_usd,
            mode=entry.mode,
        )
        for threshold in crossed
    ]


def exceeded(over: list[LedgerRow], amount: Decimal) -> BudgetExceeded:
    # Name the tightest cap; scope keys hold tenant and feature ids, never secrets.
    entry = min(over, key=lambda e: e.limit_usd - e.spent_usd - e.reserved_usd)
    remaining = max(entry.limit_usd - entry.spent_usd - entry.reserved_usd, ZERO)
    error = BudgetExceeded(
        f"spend cap {entry.scope_key} ({entry.period}) would be exceeded: limit "
        f"{format_usd(entry.limit_usd)}, remaining {format_usd(remaining)}, "
        f"this request may cost up to {format_usd(amount)}"
    )
    error.needed_usd = amount
    return error
