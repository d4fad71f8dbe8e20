"""Running the simulator: ``serve`` (blocking, for the CLI) and ``SimServer`` (in-process).

``SimServer`` runs the app on its own event loop in a background thread, so synchronous
tests, async tests (on their own loop) and benchmarks can all point clients at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from llmops.sim.config import SimConfig
from llmops.sim.server import SimState, build_app, state_of

__all__ = ["SimServer", "serve"]

_T = TypeVar("_T")

# Long enough for in-flight answers with demo latencies; hung requests are released on
# shutdown, so nothing legitimately runs longer.
_SHUTDOWN_TIMEOUT_S = 5.0


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
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


def serve(host: str, port: int, config: SimConfig) -> None:
    """Serve ``config`` on host:port until SIGINT or SIGTERM (blocking)."""

    async def main() -> None:
        runner, bound = await _start(build_app(config), host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"simulator listening on http://{host}:{bound}/v1", flush=True)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runner.cleanup()

    asyncio.run(main())


class SimServer:
    """The simulator on a free port in a background thread; use as a (async) context manager.

    ``with SimServer(SimConfig()) as sim: client.post(sim.base_url + "/chat/completions")``
    """

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._config = config if config is not None else SimConfig()
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SimServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def start(self) -> None:
        """Start serving; returns once the port is bound (raises if binding failed)."""
        if self._thread is not None:
            raise RuntimeError("SimServer is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="llmops-sim", daemon=True
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
        self._app = build_app(self._config)
        self._stopped = asyncio.Event()
        runner, self._port = await _start(self._app, self.host, self._requested_port)
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

    def _call(self, fn: Callable[[SimState], _T]) -> _T:
        """Run ``fn`` on the server's loop, where the state lives, and return its result."""
        loop, app = self._loop, self._app
        if loop is None or app is None:
            raise RuntimeError("SimServer is not running")

        async def on_loop() -> _T:
            return fn(state_of(app))

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result()

    def stats(self) -> dict[str, Any]:
        """The same JSON as ``GET /_sim/stats``."""
        return self._call(lambda state: state.stats.snapshot())

    def configure(self, profiles: SimConfig | Mapping[str, Any]) -> None:
        """Replace the config (as ``POST /_sim/config``); raises ConfigError when invalid.

        Before ``start()`` this only sets the config the server will start with.
        """
        if isinstance(profiles, SimConfig):
            config = profiles
        else:
            config = SimConfig.model_validate(dict(profiles), context={"file": "configure()"})
        self._config = config
        if self._thread is not None:
            self._call(lambda state: state.configure(config))

    def reset(self) -> None:
        """Clear stats and restart ``fail_first`` counters (as ``POST /_sim/reset``)."""
        self._call(lambda state: state.reset())

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
