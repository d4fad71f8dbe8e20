"""The queue worker: claims jobs in batches under leases and runs them through the gateway.

One :class:`QueueWorker` keeps up to ``concurrency`` jobs in flight on one event loop,
holding up to a batch and a half more claimed and waiting (so a freed slot is refilled
at once), claiming a whole batch again whenever a batch of room is free; it heartbeats
the leases of every job it holds every third of the lease. Terminal and retry
transitions are group-committed (one transaction, and one statement per kind of
transition, for every transition waiting), fenced on the lease; the action outcomes of
the completed jobs are written in the same transaction (:mod:`llmops.queue.terminal`).

Exactly-once accounting: the gateway returns a call only after its request_log row
(which carries ``job_id``) is committed, and the job's transition is written after that.
A worker killed in between leaves a running job whose lease expires; the next claim finds
the answered call in the request log and completes the job from it without calling the
provider again. A killed worker's calls that had not returned are not billed (no answer),
and their attempt counts as used (``lease_expired`` in the history).

Graceful stop (:meth:`QueueWorker.stop`, wired to SIGTERM/SIGINT by
:func:`install_signal_handlers`): no new claims; in-flight jobs get ``grace_s`` to finish,
then are cancelled and released back to the queue without using an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from llmops.errors import BudgetExceeded, ValidationError
from llmops.gateway.core import ChatRequest, ChatResult, Gateway
from llmops.ids import new_id, utcnow
from llmops.prompts.files import PromptFile
from llmops.prompts.store import resolve_prompt
from llmops.queue.callbacks import deliver_due
from llmops.queue.retry import Failure, backoff_s, classify
from llmops.queue.store import ClaimedJob, JobStore, Recovered, Transition
from llmops.settings import Settings
from llmops.telemetry import tracing

__all__ = ["QueueWorker", "WorkerStats", "install_signal_handlers"]

log = logging.getLogger("llmops.queue")

_PromptKey = tuple[str, int]


@dataclass
class WorkerStats:
    """What one run of a worker did."""

    claimed: int = 0
    completed: int = 0
    recovered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    lost_leases: int = 0
    callbacks_delivered: int = 0
    cost_usd: Decimal = Decimal(0)
    ended: str = ""  # empty (nothing left) | time (max_seconds) | stopped (stop/signal)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cost_usd": str(self.cost_usd)}


@dataclass
class _Running:
    job: ClaimedJob
    task: asyncio.Task[None]
    done: bool = False
    tags: dict[str, Any] = field(default_factory=dict)


class QueueWorker:
    """Drains the job queue through one gateway; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        gateway: Gateway,
        *,
        worker_id: str | None = None,
        batch_size: int = 50,
        concurrency: int = 50,
        lease_s: float = 60.0,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
        job_timeout_s: float = 600.0,
        poll_s: float = 0.5,
        callback_client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self.store = JobStore(engine)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}"
        self.batch_size = max(1, batch_size)
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.job_timeout_s = job_timeout_s
        self.poll_s = poll_s
        self._callback_client = callback_client
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._room = asyncio.Event()  # set when a claim's worth of room is free
        self._capacity = self._refill = 1
        self._slots = asyncio.Semaphore(self.concurrency)
        self._running: dict[str, _Running] = {}
        self._pending: list[tuple[Transition, asyncio.Future[bool]]] = []
        self._commit_wake = asyncio.Event()
        self._callbacks_wake = asyncio.Event()
        self.stats = WorkerStats()

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine, gateway: Gateway, **options: Any
    ) -> QueueWorker:
        """A worker with the lease and retry timings of ``settings``."""
        options.setdefault("lease_s", settings.queue_lease_s)
        options.setdefault("retry_base_s", settings.queue_retry_base_s)
        options.setdefault("retry_max_s", settings.queue_retry_max_s)
        return cls(engine, gateway, **options)

    def stop(self) -> None:
        """Ask the worker to stop gracefully (safe from a signal handler)."""
        self._stop.set()
        self._room.set()

    # -- the loop ----------------------------------------------------------------------

    async def run(
        self,
        *,
        until_empty: bool = False,
        max_seconds: float | None = None,
        grace_s: float = 30.0,
    ) -> WorkerStats:
        """Work until stopped; with ``until_empty`` also until no job is running anywhere
        or queued and due within ``retry_max_s``; with ``max_seconds`` claim nothing new
        after that long."""
        loop = asyncio.get_running_loop()
        deadline = None if max_seconds is None else loop.time() + max_seconds
        # Up to a batch and a half is claimed ahead of free slots, so a finished job's
        # slot is refilled at once; a claim (whose candidate query costs the same for 1
        # job as for a batch) waits for a whole batch of room, with half a batch still
        # waiting to run meanwhile.
        self._slots = asyncio.Semaphore(self.concurrency)
        self._capacity = capacity = self.concurrency + self.batch_size + self.batch_size // 2
        self._refill = refill = self.batch_size
        helpers = [
            asyncio.create_task(self._heartbeats(), name="queue-heartbeat"),
            asyncio.create_task(self._committer(), name="queue-commit"),
            asyncio.create_task(self._callbacks(), name="queue-callbacks"),
        ]
        try:
            self.stats.ended = "stopped"
            while not self._stop.is_set():
                if deadline is not None and loop.time() >= deadline:
                    self.stats.ended = "time"
                    break
                claimed = 0
                free = capacity - len(self._running)
                if free >= refill:
                    claimed = await self._claim(min(self.batch_size, free))
                if claimed == 0 and not self._running:
                    if until_empty and not await asyncio.to_thread(self._anything_left):
                        self.stats.ended = "empty"
                        break
                    await self._wait(self.poll_s)
                elif claimed == 0 or capacity - len(self._running) < refill:
                    await self._wait_for_slot()
            await self._drain(grace_s)
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            await self._flush_commits()
            await self.gateway.flush()
        return self.stats

    def _anything_left(self) -> bool:
        # Retries are due within retry_max_s: wait for them; a job scheduled later is
        # left for a later run.
        return self.store.busy(utcnow() + timedelta(seconds=self.retry_max_s + 1))

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _wait_for_slot(self) -> None:
        """Until a batch of room is free (a finished job sets ``_room``), the worker is
        stopped, or ``poll_s`` passed."""
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_s):
                await self._room.wait()

    async def _claim(self, n: int) -> int:
        jobs, answered, prompts = await asyncio.to_thread(self._claim_sync, n)
        if not jobs:
            return 0
        self.stats.claimed += len(jobs)
        for job in jobs:
            task = asyncio.create_task(
                self._guarded(job, answered.get(job.id), prompts), name=f"job-{job.id}"
            )
            self._running[job.id] = _Running(job, task)
            task.add_done_callback(self._forget)
        return len(jobs)

    def _claim_sync(
        self, n: int
    ) -> tuple[
        list[ClaimedJob], dict[str, Recovered], dict[_PromptKey, PromptFile | ValidationError]
    ]:
        """Claim up to ``n`` jobs, with what they need to run (one thread hop)."""
        jobs = self.store.claim(self.worker_id, n, self.lease_s, utcnow())
        if not jobs:
            return [], {}, {}
        return jobs, self.store.answered_calls([j.id for j in jobs]), self._resolve_prompts(jobs)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task.get_name().removeprefix("job-"), None)
        if self._capacity - len(self._running) >= self._refill:
            self._room.set()

    def _resolve_prompts(
        self, jobs: list[ClaimedJob]
    ) -> dict[_PromptKey, PromptFile | ValidationError]:
        wanted = {
            (str(p["name"]), int(p["version"]))
            for job in jobs
            if isinstance(p := job.payload.get("prompt"), dict)
        }
        found: dict[_PromptKey, PromptFile | ValidationError] = {}
        if not wanted:
            return found
        with Session(self.engine) as session:
            for name, version in wanted:
                try:
                    found[(name, version)] = resolve_prompt(session, name, version=version).prompt
                except ValidationError as exc:
                    found[(name, version)] = exc
        return found

    async def _drain(self, grace_s: float) -> None:
        """Let in-flight jobs finish for ``grace_s``, then cancel and release the rest."""
        running = list(self._running.values())
        if not running:
            return
        await asyncio.wait([r.task for r in running], timeout=grace_s)
        left = [r for r in running if not r.task.done()]
        for r in left:
            r.task.cancel()
        await asyncio.gather(*(r.task for r in left), return_exceptions=True)
        release = [
            Transition(r.job, "queued", {"history": r.job.history}, release=True)
            for r in left
            if not r.done
        ]
        if release:
            await self._flush_commits()
            applied = await asyncio.to_thread(self.store.apply, release)
            self.stats.released += sum(applied)

    # -- one job -----------------------------------------------------------------------

    async def _guarded(
        self,
        job: ClaimedJob,
        answered: Recovered | None,
        prompts: dict[_PromptKey, PromptFile | ValidationError],
    ) -> None:
        try:
            async with self._slots:
                with tracing.job_span(
                    job.id, tenant_id=job.tenant_id, feature_id=job.feature_id, attempt=job.attempt
                ):
                    await self._run_job(job, answered, prompts)
        except Exception as exc:  # the DB failed mid-job: its lease expires, a claim recovers
            log.error("job %s: left to its lease: %s", job.id, exc)

    async def _run_job(
        self,
        job: ClaimedJob,
        answered: Recovered | None,
        prompts: dict[_PromptKey, PromptFile | ValidationError],
    ) -> None:
        history = list(job.history)
        if job.reclaimed_from is not None:
            history.append(
                {
                    "attempt": job.attempt - 1,
                    "outcome": "lease_expired",
                    "worker": job.reclaimed_from,
                    "at": job.claimed_at.isoformat(),
                }
            )
        started = utcnow()
        entry: dict[str, Any] = {
            "attempt": job.attempt,
            "worker": self.worker_id,
            "started_at": started.isoformat(),
        }
        if answered is not None:
            entry.update(outcome="recovered", request_id=answered.request_id)
            entry["cost_usd"] = str(answered.cost_usd)
            result = {
                "text": answered.text,
                "model": answered.model,
                "model_group": answered.model_group,
                "usage": {
                    "input_tokens": answered.input_tokens,
                    "output_tokens": answered.output_tokens,
                },
                "request_id": answered.request_id,
                "recovered": True,
            }
            await self._finish_ok(job, history, entry, result, answered.request_id)
            self.stats.recovered += 1
            return
        if job.attempt > job.max_attempts:
            lost = "the worker holding the last attempt was lost"
            failure = Failure("lease_expired", lost, False)
            await self._finish_failed(job, history, entry, failure)
            return
        try:
            request = self._request(job, prompts)
            async with asyncio.timeout(self.job_timeout_s):
                chat = await self.gateway.chat(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, BudgetExceeded):
                failure = await asyncio.to_thread(self._classify, exc, job)
            else:
                failure = self._classify(exc, job)
            await self._finish_failed(job, history, entry, failure)
            return
        entry.update(outcome="ok", request_id=chat.request_id, cost_usd=str(chat.cost_usd))
        await self._finish_ok(job, history, entry, _result(chat), chat.request_id)

    def _classify(self, exc: BaseException, job: ClaimedJob) -> Failure:
        return classify(
            exc, budgets=self.gateway.budgets, tenant_id=job.tenant_id, feature_id=job.feature_id
        )

    def _request(
        self, job: ClaimedJob, prompts: dict[_PromptKey, PromptFile | ValidationError]
    ) -> ChatRequest:
        payload = job.payload
        prompt_name: str | None = None
        prompt_version: int | None = None
        ref = payload.get("prompt")
        if isinstance(ref, dict):
            prompt_name, prompt_version = str(ref["name"]), int(ref["version"])
            prompt = prompts.get((prompt_name, prompt_version))
            if prompt is None or isinstance(prompt, ValidationError):
                raise prompt or ValidationError(f"prompt {prompt_name!r} is gone")
            messages: list[dict[str, Any]] = list(prompt.render(ref.get("variables") or {}))
            params = dict(prompt.params)
        else:
            messages = list(payload.get("messages") or [])
            params = {}
        max_tokens = payload.get("max_tokens", params.pop("max_tokens", None))
        temperature = payload.get("temperature", params.pop("temperature", None))
        return ChatRequest(
            tenant_id=job.tenant_id,
            feature_id=job.feature_id,
            messages=messages,
            model_group=str(payload.get("model_group")),
            max_tokens=max_tokens,
            temperature=temperature,
            action_id=job.action_id or job.id,
            job_id=job.id,
            prompt_name=prompt_name,
            prompt_version=prompt_version,
            params=params,
        )

    async def _finish_ok(
        self,
        job: ClaimedJob,
        history: list[dict[str, Any]],
        entry: dict[str, Any],
        result: dict[str, Any],
        request_id: str,
    ) -> None:
        entry["ended_at"] = utcnow().isoformat()
        history.append(entry)
        cost = _history_cost(history)
        values = {
            "result": result,
            "error": None,
            "request_id": request_id,
            "cost_usd": cost,
            "history": history,
        }
        if await self._commit(Transition(job, "completed", values)):
            self.stats.completed += 1
            self.stats.cost_usd += cost
            self._terminal(job)

    async def _finish_failed(
        self,
        job: ClaimedJob,
        history: list[dict[str, Any]],
        entry: dict[str, Any],
        failure: Failure,
    ) -> None:
        entry.update(
            outcome="error",
            ended_at=utcnow().isoformat(),
            error_class=failure.error_class,
            error=failure.message,
            retryable=failure.retryable,
        )
        history.append(entry)
        error = f"{failure.error_class}: {failure.message}"
        values: dict[str, Any] = {"error": error, "history": history}
        if failure.retryable and job.attempt < job.max_attempts:
            delay = backoff_s(
                job.attempt,
                base_s=self.retry_base_s,
                max_s=self.retry_max_s,
                retry_after_s=failure.retry_after_s,
                rng=self._rng,
            )
            values["not_before"] = utcnow() + timedelta(seconds=delay)
            if await self._commit(Transition(job, "queued", values)):
                self.stats.retried += 1
            return
        if failure.retryable:
            values["error"] = f"{error} (gave up after {job.attempt} attempts)"
        # Failed calls are rarely billed, but an answer that could not be priced is.
        cost = await asyncio.to_thread(self.store.logged_cost, job.id)
        values["cost_usd"] = cost
        if await self._commit(Transition(job, "dead", values)):
            self.stats.dead += 1
            self._terminal(job)

    def _terminal(self, job: ClaimedJob) -> None:
        # Its end (the action outcome) was recorded in the transition's own transaction.
        if job.callback_url:
            self._callbacks_wake.set()

    # -- group commit, heartbeats, callbacks -------------------------------------------

    async def _commit(self, transition: Transition) -> bool:
        """Queue a transition for the next group commit; True if it took effect."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((transition, future))
        self._commit_wake.set()
        running = self._running.get(transition.job.id)
        try:
            applied = await asyncio.shield(future)
        except Exception as exc:  # the DB failed: the lease expires and a claim recovers
            log.error("job %s: state not written: %s", transition.job.id, exc)
            return False
        if running is not None:
            running.done = True
        if not applied:
            self.stats.lost_leases += 1
            log.warning("job %s: lease lost before its result was written", transition.job.id)
        return applied

    async def _committer(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            await self._flush_commits()

    async def _flush_commits(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                applied = await asyncio.to_thread(self.store.apply, [t for t, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), ok in zip(batch, applied, strict=True):
                if not future.done():
                    future.set_result(ok)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            jobs = [r.job for r in self._running.values() if not r.done]
            try:
                await asyncio.to_thread(self.store.heartbeat, self.worker_id, jobs, self.lease_s)
            except Exception as exc:  # keep beating: a claim recovers what expires
                log.error("queue heartbeat failed: %s", exc)

    async def _callbacks(self) -> None:
        client = self._callback_client or httpx.AsyncClient(timeout=10.0)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._callbacks_wake.wait(), 5.0)
                self._callbacks_wake.clear()
                try:
                    self.stats.callbacks_delivered += await deliver_due(self.engine, client)
                except Exception as exc:
                    log.error("callback delivery failed: %s", exc)
        finally:
            if self._callback_client is None:
                await client.aclose()


def _result(chat: ChatResult) -> dict[str, Any]:
    return {
        "text": chat.text,
        "finish_reason": chat.finish_reason,
        "model": chat.model,
        "model_group": chat.model_group,
        "deployment_id": chat.deployment_id,
        "usage": {
            "input_tokens": chat.usage.input_tokens,
            "output_tokens": chat.usage.output_tokens,
        },
        "request_id": chat.request_id,
        "cache_hit": chat.cache_hit,
        "degraded": chat.degraded,
    }


def _history_cost(history: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(str(e.get("cost_usd") or 0)) for e in history), Decimal(0))


def install_signal_handlers(worker: QueueWorker) -> None:
    """SIGTERM and SIGINT stop ``worker`` gracefully (on the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, worker.stop)
