"""The queue's SQL: claims with leases, fenced state transitions, dead-letter operations.

Claims are the one place where SQL differs by dialect (:meth:`JobStore.claim`):

- SQLite: the candidates are read before the write lock (the fairness ranking sorts
  every ready job: tens of milliseconds for a backlog of 10,000, which would otherwise
  hold up every other writer, the request log included); then ``BEGIN IMMEDIATE`` takes
  the file's write lock and only the candidates still ready are claimed, so two workers
  (threads or processes) never claim the same job.
- Postgres: the candidates are read without locks, then locked with
  ``FOR UPDATE SKIP LOCKED`` (re-checking that each is still ready); a concurrent worker
  skips what this one holds instead of waiting.

On both, up to three times the batch is read as candidates so that two workers racing
for the same head of the queue both fill a batch.

Order (the fairness rule): jobs are ranked within their tenant by priority (higher first)
then age, and a batch takes every ready tenant's first job before any tenant's second
(round-robin), ties broken by priority then age. One tenant's backlog of 10,000 jobs
therefore costs another tenant's single job at most one batch of waiting, and a
high-priority job of a busy tenant goes first among that tenant's jobs in the next batch.

A claim sets ``status='running'``, ``lease_owner`` and ``lease_expires_at`` and increments
``attempts``. Every later write of that claim is fenced on ``(id, status, attempts,
lease_owner)``: a worker whose lease expired and was re-claimed elsewhere changes nothing.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)

from llmops.db.engine import read_connection, write_transaction
from llmops.db.models import Job, RequestLog
from llmops.ids import utcnow
from llmops.queue.terminal import TerminalJob, record_terminal

__all__ = ["JOBS", "ClaimedJob", "JobStore", "Recovered", "Transition"]

JOBS: Table = Job.__table__  # type: ignore[attr-defined]
_LOG: Table = RequestLog.__table__  # type: ignore[attr-defined]
TERMINAL = ("completed", "dead")
#: request_log statuses that mean the gateway returned an answer for the call.
ANSWERED = ("ok", "degraded")


@dataclass
class ClaimedJob:
    """A job held by this worker under a lease."""

    id: str
    tenant_id: str
    feature_id: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    owner: str
    priority: int
    history: list[dict[str, Any]]
    callback_url: str | None
    action_id: str | None
    created_at: datetime
    #: The previous claim's lease ran out (its worker died or hung): that attempt is lost.
    reclaimed_from: str | None = None
    claimed_at: datetime = field(default_factory=utcnow)


@dataclass
class Recovered:
    """A call of an earlier attempt that returned: the job completes from it."""

    request_id: str
    text: str | None
    cost_usd: Decimal
    model: str | None
    model_group: str
    input_tokens: int
    output_tokens: int


@dataclass
class Transition:
    """One fenced write of a claimed job: complete, retry, dead-letter or release."""

    job: ClaimedJob
    status: str  # completed | queued | dead
    values: dict[str, Any]
    release: bool = False


class JobStore:
    """Statements on the ``jobs`` table of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Threads of one process queue here rather than polling SQLite's file lock.
        self._local_writer = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on success; on SQLite it holds the write lock."""
        with write_transaction(self.engine, self._local_writer, "job queue") as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads outside any write lock."""
        with read_connection(self.engine, "job queue") as conn:
            yield conn

    # -- claims ------------------------------------------------------------------------

    def claim(self, owner: str, limit: int, lease_s: float, now: datetime) -> list[ClaimedJob]:
        """Up to ``limit`` ready jobs (queued and due, or running with an expired lease),
        now leased to ``owner`` for ``lease_s`` seconds, in fairness order."""
        if limit <= 0:
            return []
        if self.dialect == "sqlite":
            with self.read() as conn:
                order = [row[0] for row in conn.execute(_candidates(now, limit * 3))]
            if not order:
                return []
        with self.write() as conn:
            if self.dialect == "postgresql":
                ids = self._lock_candidates_pg(conn, limit, now)
            else:
                ready = select(JOBS.c.id).where(JOBS.c.id.in_(order), _ready(now))
                still = {row[0] for row in conn.execute(ready)}
                ids = [job_id for job_id in order if job_id in still][:limit]
            if not ids:
                return []
            rows = {
                row["id"]: row
                for row in conn.execute(select(JOBS).where(JOBS.c.id.in_(ids))).mappings()
            }
            conn.execute(
                update(JOBS)
                .where(JOBS.c.id.in_(ids))
                .values(
                    status="running",
                    attempts=JOBS.c.attempts + 1,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    started_at=func.coalesce(JOBS.c.started_at, now),
                    updated_at=now,
                )
            )
        return [_claimed(rows[job_id], owner, now) for job_id in ids if job_id in rows]

    def _lock_candidates_pg(self, conn: Connection, limit: int, now: datetime) -> list[str]:
        order = [row[0] for row in conn.execute(_candidates(now, limit * 3))]
        if not order:
            return []
        locked = {
            row[0]
            for row in conn.execute(
                select(JOBS.c.id)
                .where(JOBS.c.id.in_(order), _ready(now))
                .with_for_update(skip_locked=True)
            )
        }
        return [job_id for job_id in order if job_id in locked][:limit]

    def heartbeat(self, owner: str, jobs: Sequence[ClaimedJob], lease_s: float) -> int:
        """Extend the leases of ``jobs`` still held by ``owner``; how many were extended."""
        if not jobs:
            return 0
        expires = utcnow() + timedelta(seconds=lease_s)
        params = [
            {"b_id": job.id, "b_attempts": job.attempt, "b_owner": job.owner, "b_expires": expires}
            for job in jobs
        ]
        with self.write() as conn:
            return int(conn.execute(_HEARTBEAT, params).rowcount)

    def answered_calls(self, job_ids: Iterable[str]) -> dict[str, Recovered]:
        """Calls of these jobs that returned an answer, by job id (the latest one each)."""
        ids = list(job_ids)
        if not ids:
            return {}
        stmt = (
            select(
                _LOG.c.job_id,
                _LOG.c.request_id,
                _LOG.c.response_text,
                _LOG.c.cost_usd,
                _LOG.c.model,
                _LOG.c.model_group,
                _LOG.c.input_tokens,
                _LOG.c.output_tokens,
            )
            .where(_LOG.c.job_id.in_(ids), _LOG.c.status.in_(ANSWERED))
            .order_by(_LOG.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return {row[0]: Recovered(*row[1:]) for row in rows}

    def logged_cost(self, job_id: str) -> Decimal:
        """What the request log charged for this job's calls (summed here: money is
        TEXT on SQLite, never summed in SQL)."""
        stmt = select(_LOG.c.cost_usd).where(_LOG.c.job_id == job_id)
        with self.engine.connect() as conn:
            return sum(conn.execute(stmt).scalars(), Decimal(0))

    # -- transitions -------------------------------------------------------------------

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        """Write ``transitions`` in one transaction; True for each that still held its
        lease (and so took effect). The terminal ones that took effect are recorded
        (:func:`~llmops.queue.terminal.record_terminal`) in the same transaction.

        Transitions of one kind are one ``executemany`` (one round trip on Postgres);
        should any of them miss its fence (its lease was lost, rare), the transaction is
        rolled back and written again row by row, to tell which ones took effect."""
        if not transitions:
            return []
        now = utcnow()
        try:
            with self.write() as conn:
                self._apply_batched(conn, transitions, now)
                _record_terminal(conn, transitions, now)
            return [True] * len(transitions)
        except _FenceMissed:
            pass
        with self.write() as conn:
            applied = [
                conn.execute(_transition_stmt(change), _transition_params(change, now)).rowcount
                == 1
                for change in transitions
            ]
            _record_terminal(
                conn, [c for c, ok in zip(transitions, applied, strict=True) if ok], now
            )
        return applied

    def _apply_batched(
        self, conn: Connection, transitions: Sequence[Transition], now: datetime
    ) -> None:
        groups: dict[tuple[Any, ...], list[Transition]] = {}
        for change in transitions:
            groups.setdefault(_transition_kind(change), []).append(change)
        for same in groups.values():
            params = [_transition_params(change, now) for change in same]
            if conn.execute(_transition_stmt(same[0]), params).rowcount != len(same):
                raise _FenceMissed

    # -- dead-letter -------------------------------------------------------------------

    def list_dead(self, tenant_id: str | None, limit: int) -> list[dict[str, Any]]:
        """Dead-lettered jobs, newest first."""
        stmt = select(
            JOBS.c.id,
            JOBS.c.tenant_id,
            JOBS.c.feature_id,
            JOBS.c.attempts,
            JOBS.c.error,
            JOBS.c.completed_at,
        ).where(JOBS.c.status == "dead")
        if tenant_id is not None:
            stmt = stmt.where(JOBS.c.tenant_id == tenant_id)
        stmt = stmt.order_by(JOBS.c.completed_at.desc(), JOBS.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def replay(self, job_ids: Sequence[str] | None, tenant_id: str | None) -> dict[str, str]:
        """Put dead jobs back on the queue with fresh attempts; per job what happened.

        Idempotent: a job that is no longer dead (already replayed) is left as it is.
        """
        now = utcnow()
        outcome: dict[str, str] = {}
        with self.write() as conn:
            stmt = select(JOBS.c.id, JOBS.c.status, JOBS.c.history)
            if job_ids is not None:
                stmt = stmt.where(JOBS.c.id.in_(list(job_ids)))
            else:
                stmt = stmt.where(JOBS.c.status == "dead")
            if tenant_id is not None:
                stmt = stmt.where(JOBS.c.tenant_id == tenant_id)
            rows = conn.execute(stmt).all()
            found = {row[0] for row in rows}
            for job_id, status, history in rows:
                if status != "dead":
                    outcome[job_id] = f"not dead-lettered (status: {status}); left as it is"
                    continue
                entry = {"event": "replayed", "at": now.isoformat()}
                conn.execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id, JOBS.c.status == "dead")
                    .values(
                        status="queued",
                        attempts=0,
                        not_before=None,
                        error=None,
                        completed_at=None,
                        callback_status=None,
                        callback_next_at=None,
                        callback_attempts=0,
                        history=[*(history or []), entry],
                        updated_at=now,
                    )
                )
                outcome[job_id] = "replayed"
            for job_id in job_ids or ():
                if job_id not in found:
                    outcome[job_id] = "unknown job"
        return outcome

    def purge(
        self, job_ids: Sequence[str] | None, tenant_id: str | None, before: datetime | None
    ) -> int:
        """Delete dead-lettered jobs (only dead ones); how many were deleted."""
        stmt = delete(JOBS).where(JOBS.c.status == "dead")
        if job_ids is not None:
            stmt = stmt.where(JOBS.c.id.in_(list(job_ids)))
        if tenant_id is not None:
            stmt = stmt.where(JOBS.c.tenant_id == tenant_id)
        if before is not None:
            stmt = stmt.where(JOBS.c.completed_at < before)
        with self.write() as conn:
            return int(conn.execute(stmt).rowcount)

    def busy(self, due_by: datetime) -> bool:
        """True while any job is running, or queued and due by ``due_by``."""
        stmt = select(JOBS.c.id).where(
            or_(
                JOBS.c.status == "running",
                and_(
                    JOBS.c.status == "queued",
                    or_(JOBS.c.not_before.is_(None), JOBS.c.not_before <= due_by),
                ),
            )
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt.limit(1)).first() is not None

    def counts(self) -> dict[str, int]:
        """Jobs per status."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
            return {status: int(n) for status, n in rows}


def _ready(now: datetime) -> Any:
    """Queued and due, or running under a lease that has run out."""
    return or_(
        and_(
            JOBS.c.status == "queued",
            or_(JOBS.c.not_before.is_(None), JOBS.c.not_before <= now),
        ),
        and_(JOBS.c.status == "running", JOBS.c.lease_expires_at < now),
    )


def _candidates(now: datetime, limit: int) -> Any:
    """Ids of ready jobs in fairness order: round-robin over tenants, then priority, age."""
    rank = (
        func.row_number()
        .over(
            partition_by=JOBS.c.tenant_id,
            order_by=(JOBS.c.priority.desc(), JOBS.c.created_at, JOBS.c.id),
        )
        .label("rank")
    )
    ready = (
        select(JOBS.c.id, JOBS.c.priority, JOBS.c.created_at, rank).where(_ready(now)).subquery()
    )
    return (
        select(ready.c.id)
        .where(ready.c.rank <= limit)
        .order_by(ready.c.rank, ready.c.priority.desc(), ready.c.created_at, ready.c.id)
        .limit(limit)
    )


class _FenceMissed(Exception):
    """A batched write changed fewer rows than it had transitions."""


#: Every later write of a claim matches it on (id, status, attempts, owner).
_FENCE = and_(
    JOBS.c.id == bindparam("b_id"),
    JOBS.c.status == "running",
    JOBS.c.attempts == bindparam("b_attempts"),
    JOBS.c.lease_owner == bindparam("b_owner"),
)
_NOW = bindparam("b_now", type_=JOBS.c.updated_at.type)
_HEARTBEAT = (
    update(JOBS)
    .where(_FENCE)
    .values(lease_expires_at=bindparam("b_expires", type_=JOBS.c.lease_expires_at.type))
)


def _transition_kind(change: Transition) -> tuple[Any, ...]:
    """Transitions of one kind are written by the same statement."""
    callback = change.status in TERMINAL and change.job.callback_url is not None
    return (change.status, change.release, callback, *sorted(change.values))


@functools.lru_cache(maxsize=64)
def _statement(kind: tuple[Any, ...]) -> Any:
    status, release, callback, *columns = kind
    values: dict[str, Any] = {
        name: bindparam(f"b_{name}", type_=JOBS.c[name].type) for name in columns
    }
    values.update(status=status, updated_at=_NOW, lease_owner=None, lease_expires_at=None)
    if release:
        values["attempts"] = JOBS.c.attempts - 1
    if status in TERMINAL:
        values["completed_at"] = _NOW
        if callback:
            values.update(callback_status="pending", callback_next_at=_NOW)
    return update(JOBS).where(_FENCE).values(**values)


def _transition_stmt(change: Transition) -> Any:
    return _statement(_transition_kind(change))


def _transition_params(change: Transition, now: datetime) -> dict[str, Any]:
    job = change.job
    params = {f"b_{name}": value for name, value in change.values.items()}
    params.update(b_id=job.id, b_attempts=job.attempt, b_owner=job.owner, b_now=now)
    return params


def _record_terminal(conn: Connection, applied: Sequence[Transition], now: datetime) -> None:
    ended = [
        TerminalJob(
            job_id=change.job.id,
            tenant_id=change.job.tenant_id,
            feature_id=change.job.feature_id,
            action_id=change.job.action_id or change.job.id,
            status=change.status,
            cost_usd=change.values.get("cost_usd", Decimal(0)),
            request_id=change.values.get("request_id"),
            error=change.values.get("error"),
        )
        for change in applied
        if change.status in TERMINAL and not change.release
    ]
    if ended:
        record_terminal(conn, ended, now)


def _claimed(row: Any, owner: str, now: datetime) -> ClaimedJob:
    expired = row["status"] == "running"
    return ClaimedJob(
        id=row["id"],
        tenant_id=row["tenant_id"],
        feature_id=row["feature_id"],
        payload=dict(row["payload"] or {}),
        attempt=int(row["attempts"]) + 1,
        max_attempts=int(row["max_attempts"]),
        owner=owner,
        priority=int(row["priority"]),
        history=list(row["history"] or []),
        callback_url=row["callback_url"],
        action_id=row["action_id"],
        created_at=row["created_at"],
        reclaimed_from=row["lease_owner"] if expired else None,
        claimed_at=now,
    )
