"""The eval output cache in the ops DB, keyed on (prompt version hash, dataset item hash,
model group, parameters, trial): a rerun of unchanged inputs makes no provider call, and
an interrupted run resumes where it stopped, since each output is stored as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.db.models import EvalOutputCache
from llmops.evals.datasets import canonical_hash

__all__ = ["CacheWriter", "OutputCache", "output_key"]

_CHUNK = 500


def output_key(
    prompt_hash: str, item_hash: str, model_group: str, params: dict[str, Any], trial: int
) -> str:
    """The cache key of one model output."""
    return canonical_hash([prompt_hash, item_hash, model_group, params, trial])


class OutputCache:
    """Reads and writes :class:`EvalOutputCache` rows (thread-safe: one session per call)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_many(self, keys: Iterable[str]) -> dict[str, EvalOutputCache]:
        wanted = sorted(set(keys))
        found: dict[str, EvalOutputCache] = {}
        with Session(self.engine, expire_on_commit=False) as session:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                rows = session.exec(
                    select(EvalOutputCache).where(col(EvalOutputCache.key).in_(chunk))
                ).all()
                found.update((row.key, row) for row in rows)
        return found

    def put(self, row: EvalOutputCache) -> None:
        """Store one output; a row stored concurrently by another run is kept as is."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()

    def put_many(self, rows: list[EvalOutputCache]) -> None:
        """Store rows in one transaction (row by row if another run stored some first)."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add_all(rows)
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
        for row in rows:
            self.put(row)


class CacheWriter:
    """Stores outputs in batches every ``interval_s`` (one transaction per batch instead
    of one per call: on SQLite each commit is a disk sync that serialises writers).

    Leaving the context (also by cancellation) flushes what is pending, so an
    interrupted run keeps every output it received.
    """

    def __init__(self, cache: OutputCache, interval_s: float = 0.1) -> None:
        self.cache, self.interval_s = cache, interval_s
        self._pending: list[EvalOutputCache] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, row: EvalOutputCache) -> None:
        self._pending.append(row)

    async def flush(self) -> None:
        rows, self._pending = self._pending, []
        if rows:
            await asyncio.to_thread(self.cache.put_many, rows)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
