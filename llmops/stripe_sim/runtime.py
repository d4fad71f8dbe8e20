"""Running the Stripe stand-in: ``serve`` (blocking, for the CLI) and ``StripeSim``
(in-process, on its own event loop in a background thread, for tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from llmops.appserver import BackgroundApp, serve_forever
from llmops.stripe_sim.server import Fault, StripeSimState, build_app, state_of

__all__ = ["StripeSim", "serve"]

_T = TypeVar("_T")


def serve(host: str, port: int) -> None:
    """Serve the stand-in on host:port until SIGINT or SIGTERM (blocking)."""
    serve_forever(build_app(), host, port, "Stripe stand-in listening on http://{host}:{port}")


class StripeSim(BackgroundApp):
    """The stand-in on a free port in a background thread; a context manager.

    ``with StripeSim() as stripe: StripeClient("sk_test_x", base_addresses={"api": stripe.url})``
    """

    _thread_name = "llmops-stripe-sim"

    def _build_app(self) -> web.Application:
        return build_app()

    def call(self, fn: Callable[[StripeSimState], _T]) -> _T:
        """Run ``fn`` on the server's loop, where the state lives, and return its result."""
        return self._on_loop(lambda app: fn(state_of(app)))

    def stats(self) -> dict[str, Any]:
        return self.call(lambda s: s.stats())

    def fail_next(self, status: int, count: int, path_prefix: str = "/v1/") -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``."""
        self.call(lambda s: s.faults.append(Fault(status, count, path_prefix)))

    def set_fault_rate(self, rates: dict[int, float]) -> None:
        """Answer that fraction of requests with each status (e.g. ``{429: 0.5}``)."""
        self.call(lambda s: setattr(s, "fault_rate", dict(rates)))

    def set_latency(self, seconds: float) -> None:
        self.call(lambda s: setattr(s, "latency_s", seconds))
