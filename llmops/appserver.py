"""Serving a local aiohttp app: in the foreground for the CLI, or on a background thread.

The provider simulator and the Stripe stand-in both run this way: ``serve_forever`` for
``llmops sim serve`` / ``llmops stripe-sim serve``, and :class:`BackgroundApp` (its own
event loop in a daemon thread) for tests and benchmarks, so synchronous tests, async tests
on their own loop and benchmarks can all point clients at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

from aiohttp import web

__all__ = ["BackgroundApp", "serve_forever", "start_app"]

_T = TypeVar("_T")

# Long enough for in-flight answers with demo latencies; hung requests are released on
# shutdown, so nothing legitimately runs longer.
_SHUTDOWN_TIMEOUT_S = 5.0


async def start_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Bind ``app`` to host:port (0: a free port); returns the runner and the bound port."""
    # handler_cancellation: a client that gives up on a hung request frees its handler.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def serve_forever(app: web.Application, host: str, port: int, banner: str) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (blocking); prints ``banner`` once bound, with
    ``{port}`` replaced by the bound port (scripts read that line to find the server)."""

    async def main() -> None:
        runner, bound = await start_app(app, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(banner.format(host=host, port=bound), flush=True)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runner.cleanup()

    asyncio.run(main())


class BackgroundApp:
    """An app on a free port in a background thread; a (async) context manager.

    Subclasses say which app to build (:meth:`_build_app`); :meth:`_on_loop` runs a
    function on the server's loop, where the app's state lives.
    """

    _thread_name = "llmops-app"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def _build_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start serving; returns once the port is bound (raises if binding failed)."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=self._thread_name, daemon=True
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
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._loop = None

    async def _serve(self, ready: threading.Event) -> None:
        self._app = self._build_app()
        self._stopped = asyncio.Event()
        runner, self._port = await start_app(self._app, self.host, self._requested_port)
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def _signal_stop(self) -> threading.Thread | None:
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is not None and loop is not None and stopped is not None:
            # RuntimeError: the loop already closed, the thread is finishing on its own.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        return thread

    def _forget(self) -> None:
        self._thread = None
        self._port = None
        self._app = None

    def stop(self) -> None:
        """Stop serving, close every socket and join the thread (idempotent)."""
        thread = self._signal_stop()
        if thread is not None:
            thread.join()
        self._forget()

    def _on_loop(self, fn: Callable[[web.Application], _T]) -> _T:
        """Run ``fn(app)`` on the server's loop and return its result."""
        loop, app = self._loop, self._app
        if loop is None or app is None:
            raise RuntimeError(f"{type(self).__name__} is not running")

        async def on_loop() -> _T:
            return fn(app)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result()

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

    async def __aenter__(self) -> Self:
        # Starting and stopping block only briefly (bind, close); the server runs on its
        # own loop, so the caller's loop keeps serving its clients meanwhile.
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Wait without blocking the caller's loop: its clients may still be talking to us.
        thread = self._signal_stop()
        while thread is not None and thread.is_alive():
            await asyncio.sleep(0.005)
        if thread is not None:
            thread.join()
        self._forget()
