"""Prometheus gauges read from the ops DB at scrape time: what every process shares.

Per-process counters (requests, errors, latency, tokens, cost, cache hits) live with
the code that counts them (``llmops.gateway.http_metrics``). State that belongs to the
whole deployment is read from the ops DB when Prometheus scrapes, at most once per
``ttl_s``: budget remaining per cap, queue depth and dead-letter size per tenant, open
alerts. A database that cannot be read yields no samples and a scrape-error counter,
never a failed scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from llmops.db.models import Alert, Job

log = logging.getLogger(__name__)

#: Job states that are waiting for a worker, and the dead-letter state.
QUEUED_STATES = ("queued", "retrying", "running")
DEAD_STATE = "dead"


class OpsCollector(Collector):
    """Budget, queue and alert gauges from the ops DB, cached for ``ttl_s`` seconds."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = 5.0,
        caps: Callable[[], list[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._caps = caps
        self._lock = threading.Lock()
        self._cached: list[Any] = []
        self._at = -1e9
        self.errors = 0

    def collect(self) -> Iterator[Any]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                try:
                    self._cached = self._read()
                except Exception as exc:  # a scrape must not fail because the DB did
                    self.errors += 1
                    self._cached = []
                    log.warning("ops metrics not read: %s: %s", type(exc).__name__, exc)
                self._at = time.monotonic()
            families = list(self._cached)
        errors = CounterMetricFamily(
            "llmops_ops_metrics_errors", "Scrapes whose ops-DB gauges could not be read."
        )
        errors.add_metric([], self.errors)
        families.append(errors)
        yield from families

    def _read(self) -> list[Any]:
        families: list[Any] = []
        if self._caps is not None:
            remaining = GaugeMetricFamily(
                "llmops_budget_remaining_usd",
                "What new reservations may still take under each spend cap (USD).",
                labels=["scope", "period", "mode"],
            )
            used = GaugeMetricFamily(
                "llmops_budget_used_ratio",
                "Settled spend over the cap's limit in its current window.",
                labels=["scope", "period", "mode"],
            )
            for cap in self._caps():
                labels = [cap.scope_key, cap.period, cap.mode]
                remaining.add_metric(labels, float(cap.remaining_usd))
                used.add_metric(labels, float(cap.used_pct) / 100)
            families += [remaining, used]
        with Session(self.engine) as session:
            by_state = session.exec(
                select(Job.tenant_id, Job.status, func.count()).group_by(
                    col(Job.tenant_id), col(Job.status)
                )
            ).all()
            open_alerts = session.exec(
                select(Alert.kind, func.count())
                .where(col(Alert.delivered_at).is_(None))
                .group_by(col(Alert.kind))
            ).all()
        depth = GaugeMetricFamily(
            "llmops_queue_depth", "Jobs waiting or running, per tenant.", labels=["tenant"]
        )
        dead = GaugeMetricFamily(
            "llmops_dead_letter_jobs",
            "Jobs in the dead-letter state, per tenant.",
            labels=["tenant"],
        )
        waiting: Tally[str] = Tally()
        dead_letters: Tally[str] = Tally()
        for tenant, status, n in by_state:
            if status in QUEUED_STATES:
                waiting[tenant] += n
            elif status == DEAD_STATE:
                dead_letters[tenant] += n
        for tenant, n in sorted(waiting.items()):
            depth.add_metric([tenant], n)
        for tenant, n in sorted(dead_letters.items()):
            dead.add_metric([tenant], n)
        alerts = GaugeMetricFamily(
            "llmops_alerts_undelivered", "Alerts recorded but not delivered yet.", labels=["kind"]
        )
        for kind, n in open_alerts:
            alerts.add_metric([kind], n)
        return [*families, depth, dead, alerts]


class WorkerCollector(Collector):
    """A queue worker's own counters, read live from its stats at scrape time."""

    OUTCOMES = ("completed", "recovered", "retried", "dead", "released", "lost_leases")

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Any]:
        stats = self.worker.stats
        jobs = CounterMetricFamily(
            "llmops_worker_jobs",
            "Job attempts this worker finished, by outcome.",
            labels=["outcome"],
        )
        for outcome in self.OUTCOMES:
            jobs.add_metric([outcome], getattr(stats, outcome))
        yield jobs
        yield CounterMetricFamily(
            "llmops_worker_claimed", "Jobs this worker claimed.", value=stats.claimed
        )
        yield CounterMetricFamily(
            "llmops_worker_cost_usd",
            "Provider cost of the jobs this worker completed (a float: never for billing).",
            value=float(stats.cost_usd),
        )
        yield GaugeMetricFamily(
            "llmops_worker_in_flight",
            "Jobs running in this worker now.",
            value=len(getattr(self.worker, "_running", {})),
        )


def serve_worker_metrics(
    worker: Any, engine: Engine, port: int, host: str = "0.0.0.0"
) -> Callable[[], None]:
    """Expose the worker's counters and the ops-DB gauges on ``http://host:port/metrics``;
    returns the function that stops the server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=True)
    registry.register(WorkerCollector(worker))
    registry.register(OpsCollector(engine))
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
