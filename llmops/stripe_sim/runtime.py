"""Running the Stripe stand-in: ``serve`` (blocking, for the CLI) and ``StripeSim``
(in-process, on its own event loop in a background thread, for tests and benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from llmops.sim.runtime import _start
from llmops.stripe_sim.server import Fault, StripeSimState, build_app, state_of

__all__ = ["StripeSim", "serve"]

_T = TypeVar("_T")


def serve(host: str, port: int) -> None:
    """Serve the stand-in on host:port until SIGINT or SIGTERM (blocking)."""

    async def main() -> None:
        runner, bound = await _start(build_app(), host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"Stripe stand-in listening on http://{host}:{bound}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


class StripeSim:
    """The stand-in on a free port in a background thread; a context manager.

    ``with StripeSim() as stripe: StripeClient("sk_test_x", base_addresses={"api": stripe.url})``
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """The API base, e.g. ``http://127.0.0.1:PORT``."""
        if self._port is None:
            raise RuntimeError("StripeSim is not running")
        return f"http://{self.host}:{self._port}"

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="llmops-stripe-sim", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # reported to start() in the caller's thread
            if not ready.is_set():
                failure.append(exc)
                ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self, ready: threading.Event) -> None:
        self._app = build_app()
        self._stopped = asyncio.Event()
        runner, self._port = await _start(self._app, self.host, self._requested_port)
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is not None and loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
            thread.join()
        self._thread = None
        self._port = None

    def call(self, fn: Callable[[StripeSimState], _T]) -> _T:
        """Run ``fn`` on the server's loop, where the state lives, and return its result."""
        loop, app = self._loop, self._app
        if loop is None or app is None:
            raise RuntimeError("StripeSim is not running")

        async def on_loop() -> _T:
            return fn(state_of(app))

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result()

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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
