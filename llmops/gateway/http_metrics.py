"""Prometheus metrics of the HTTP gateway, in a registry owned by one app.

Label values that callers choose are bounded so a misbehaving client cannot grow the
registry without limit: a model group outside the config is ``_unknown``, and features
past the first ``max_features`` seen are ``_other``. Each worker process has its own
registry: scrape every worker, or run one per port.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """Counters and a latency histogram for ``POST /v1/chat/completions``."""

    def __init__(self, model_groups: Iterable[str], *, max_features: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._groups = frozenset(model_groups)
        self._features: set[str] = set()
        self._max_features = max_features
        self._lock = threading.Lock()
        self.requests = Counter(
            "llmops_requests",
            "Chat completion requests by HTTP status, model group and feature.",
            ["status", "model_group", "feature"],
            registry=self.registry,
        )
        self.errors = Counter(
            "llmops_errors",
            "Failed chat completion requests by error class.",
            ["error_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "llmops_request_duration_seconds",
            "Time to the full answer (to the end of the stream when streaming).",
            ["model_group", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llmops_tokens",
            "Tokens by direction (input, output), model group and feature.",
            ["direction", "model_group", "feature"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "llmops_cache_hits",
            "Requests answered from the response cache, by model group and feature.",
            ["model_group", "feature"],
            registry=self.registry,
        )
        self.degraded = Counter(
            "llmops_degraded",
            "Requests answered degraded (stale, static, downgraded), by model group and kind.",
            ["model_group", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "llmops_cost_usd",
            "Cost in USD by model group and feature (a float: for dashboards, never billing).",
            ["model_group", "feature"],
            registry=self.registry,
        )

    def group(self, model_group: str) -> str:
        """The label for a requested model group."""
        if not model_group:
            return ""
        return model_group if model_group in self._groups else "_unknown"

    def feature(self, feature: str) -> str:
        """The label for a feature, bounded to ``max_features`` distinct values."""
        if not feature or feature in self._features:
            return feature
        with self._lock:
            if len(self._features) < self._max_features:
                self._features.add(feature)
                return feature
        return "_other"

    def observe(
        self,
        *,
        status: int,
        model_group: str,
        feature: str,
        seconds: float,
        stream: bool = False,
        error_class: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        cache_hit: bool = False,
        degraded: str | None = None,
    ) -> None:
        """Record one finished request."""
        group, feat = self.group(model_group), self.feature(feature)
        self.requests.labels(str(status), group, feat).inc()
        self.latency.labels(group, "true" if stream else "false").observe(seconds)
        if error_class is not None:
            self.errors.labels(error_class).inc()
        if input_tokens:
            self.tokens.labels("input", group, feat).inc(input_tokens)
        if output_tokens:
            self.tokens.labels("output", group, feat).inc(output_tokens)
        if cost_usd:
            self.cost.labels(group, feat).inc(float(cost_usd))
        if cache_hit:
            self.cache_hits.labels(group, feat).inc()
        if degraded:
            self.degraded.labels(group, degraded).inc()

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
