"""Writing request_log rows with group commit: one transaction for every row that is waiting.

A call's row is handed to a background task that inserts all queued rows in one
``executemany`` on a worker thread. Callers await their row's commit by default, so a call
that returned is always logged, even if the process is then killed; under load many rows
share a commit, which is what keeps logging off the critical path. ``wait=False`` returns
at once (the row is committed within one flush); :meth:`aclose` flushes everything, and
the HTTP gateway calls it on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, insert

from llmops.db.models import RequestLog

log = logging.getLogger(__name__)

_Pending = tuple[dict[str, Any], "asyncio.Future[None] | None"]
#: Called inside a batch transaction; returns what to call once it ended (committed?).
CommitHook = Callable[[Connection], Callable[[bool], None]]


class RequestLogWriter:
    """Batches request_log inserts; each batch is one committed transaction."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 500,
        hook: CommitHook | None = None,
        async_commit: bool = False,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        #: Runs inside each batch transaction, after the inserts (the spend-cap leases
        #: book the spend of the logged calls there); told afterwards if it committed.
        self.hook = hook
        #: Opt-in (``LLMOPS_LOG_ASYNC_COMMIT``), Postgres only: commit without waiting for
        #: the WAL flush (``synchronous_commit = off`` for these transactions only). A
        #: killed gateway loses nothing: the server has the commit. A crash of the database
        #: server itself can lose the last few hundred ms of batches, each whole (its rows
        #: and the spend it booked alike, and the spend's lease then still counts it as
        #: reserved): never a row without its spend, never spend counted twice.
        self.async_commit = async_commit
        self._insert = insert(RequestLog)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def write_now(self, rows: list[dict[str, Any]], *, hook: bool = False) -> None:
        """Insert ``rows`` (column name -> value) in one transaction, synchronously;
        with ``hook``, the commit hook runs in it too."""
        if not rows:
            return
        finish: Callable[[bool], None] | None = None
        committed = False
        try:
            with self.engine.begin() as conn:
                if self.async_commit and self.engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                # The insert first: on SQLite it takes the write lock the hook reads under.
                conn.execute(self._insert, rows)
                if hook and self.hook is not None:
                    finish = self.hook(conn)
            committed = True
        finally:
            if finish is not None:
                finish(committed)

    async def write(self, row: dict[str, Any], *, wait: bool = True) -> None:
        """Queue ``row``; with ``wait``, return once it is committed (raising if it failed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._start(loop)
        assert self._queue is not None
        future: asyncio.Future[None] | None = loop.create_future() if wait else None
        self._queue.put_nowait((row, future))
        if future is not None:
            await future

    async def flush(self) -> None:
        """Return once every row queued so far is committed."""
        if self._queue is not None and self._task is not None and not self._task.done():
            await self._queue.join()

    async def aclose(self) -> None:
        """Flush and stop the background task."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = self._queue = self._loop = None

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = asyncio.Queue()
        self._task = loop.create_task(self._run(self._queue), name="llmops-request-log")

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            errors = await asyncio.to_thread(self._write_batch, [row for row, _ in batch])
            for (_, future), error in zip(batch, errors, strict=True):
                if future is not None and not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
                queue.task_done()

    def _write_batch(self, rows: list[dict[str, Any]]) -> list[Exception | None]:
        """Write ``rows`` in one transaction; if that fails, each row on its own, so that a
        row the database refuses fails only its own caller."""
        with contextlib.suppress(Exception):
            self.write_now(rows, hook=True)
            return [None] * len(rows)
        results: list[Exception | None] = []
        for row in rows:
            try:
                self.write_now([row])
                results.append(None)
            except Exception as exc:
                log.error("request_log: row %s not written: %s", row.get("request_id"), exc)
                results.append(exc)
        return results
