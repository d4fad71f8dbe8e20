"""The ops DB rate limiter: one ``rate_limit_buckets`` row per limit, shared by processes.

Each acquire or settle is one short transaction that locks its rows, reads them, decides
in Python (:mod:`ratelimit_core`, the same code as every backend) and writes them back:

- SQLite: ``BEGIN IMMEDIATE`` takes the file's write lock before the read. pysqlite's
  default lazy ``BEGIN`` would take it only at the first write, so two processes could
  both read the same level and both admit. Writers queue on the 30 s busy timeout.
- Postgres: ``SELECT ... ORDER BY key FOR UPDATE`` locks the rows in key order (so two
  requests sharing keys cannot deadlock), with ``synchronous_commit`` off for the
  transaction. A row must exist to be locked: a key seen for
  the first time is inserted empty in its own transaction (``ON CONFLICT DO NOTHING``),
  then the transaction starts over.

A rejected request rolls back, so it changes nothing. The SQL runs in a worker thread
(``asyncio.to_thread``); the engine is the caller's and is not disposed here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from llmops.db.engine import connect
from llmops.db.models import RateLimitBucket
from llmops.errors import DatabaseUnavailable
from llmops.gateway.ratelimit_core import (
    Charge,
    Clock,
    Permit,
    RateLimit,
    State,
    give,
    plan,
    settlement,
    take,
    token_charges,
)

__all__ = ["DbRateLimiter"]

_TABLE = SQLModel.metadata.tables[RateLimitBucket.__tablename__]
Decide = Callable[[Sequence[Charge], Sequence[State | None], float], list[State]]


class DbRateLimiter:
    """Rate limits in the ops DB (SQLite or Postgres): atomic across processes and hosts."""

    def __init__(self, engine: Engine, *, clock: Clock = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._sqlite = engine.dialect.name == "sqlite"
        self._select = (
            select(_TABLE.c.key, _TABLE.c.level, _TABLE.c.updated_at)
            .where(_TABLE.c.key.in_(bindparam("keys", expanding=True)))
            .order_by(_TABLE.c.key)
            .with_for_update()  # omitted on SQLite, which has no row locks
        )
        insert = (sqlite if self._sqlite else postgresql).insert(_TABLE)
        self._upsert = insert.on_conflict_do_update(
            index_elements=[_TABLE.c.key],
            set_={"level": insert.excluded.level, "updated_at": insert.excluded.updated_at},
        )
        self._insert_missing = insert.on_conflict_do_nothing(index_elements=[_TABLE.c.key])

    async def acquire(self, rules: list[tuple[str, RateLimit]], *, tokens: int) -> Permit:
        charges = plan(rules, tokens)
        if charges:
            await asyncio.to_thread(self._transact, charges, take)
        return Permit(tokens, token_charges(charges))

    async def settle(self, permit: Permit, *, actual_tokens: int) -> None:
        charges = settlement(permit, actual_tokens)
        if charges:
            await asyncio.to_thread(self._transact, charges, give)

    async def aclose(self) -> None:
        return None

    async def take(self, charges: Sequence[Charge]) -> None:
        """Take every charge, all or none (raises :class:`RateLimited`)."""
        if charges:
            await asyncio.to_thread(self._transact, charges, take)

    async def give(self, charges: Sequence[Charge]) -> None:
        """Add each charge's amount (negative: give units back), never below empty."""
        if charges:
            await asyncio.to_thread(self._transact, charges, give)

    def _transact(self, charges: Sequence[Charge], decide: Decide) -> None:
        keys = sorted(charge.name for charge in charges)
        try:
            with connect(self._engine) as connection:
                # Twice at most: the second pass finds every row the first one created.
                while not self._try(connection, keys, charges, decide):
                    pass
        except OperationalError as exc:
            raise DatabaseUnavailable(f"rate limiter: {exc.orig or exc}") from exc

    def _try(
        self, connection: Connection, keys: list[str], charges: Sequence[Charge], decide: Decide
    ) -> bool:
        with connection.begin():
            if self._sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                # Limiter state is worth less than a WAL flush per request: a Postgres
                # crash may forget the last few hundred ms of it (a few extra admits),
                # never corrupt it. SET LOCAL: other writers on the pool stay durable.
                connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            rows = connection.execute(self._select, {"keys": keys}).all()
            # The clock is read under the lock, so waiting for it never makes "now" stale.
            moment = datetime.fromtimestamp(self._clock(), UTC)
            missing = set(keys) - {row.key for row in rows}
            if not missing or self._sqlite:
                states = {row.key: (row.level, row.updated_at.timestamp()) for row in rows}
                # The timestamp of the stored (microsecond) moment, so a bucket written
                # and read at the same clock reading sees exactly zero time pass.
                now = moment.timestamp()
                new_states = decide(charges, [states.get(c.name) for c in charges], now)
                connection.execute(
                    self._upsert,
                    [
                        {
                            "key": charge.name,
                            "level": level,
                            "updated_at": datetime.fromtimestamp(updated_at, UTC),
                        }
                        for charge, (level, updated_at) in zip(charges, new_states, strict=True)
                    ],
                )
                return True
        # Postgres, first use of a key: create it empty, committed, then lock it properly.
        with connection.begin():
            connection.execute(
                self._insert_missing,
                [{"key": key, "level": 0.0, "updated_at": moment} for key in sorted(missing)],
            )
        return False
