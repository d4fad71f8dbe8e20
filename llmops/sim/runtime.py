"""Running the simulator: ``serve`` (blocking, for the CLI) and ``SimServer`` (in-process).

``SimServer`` runs the app on its own event loop in a background thread (see
:mod:`llmops.appserver`), so synchronous tests, async tests (on their own loop) and
benchmarks can all point clients at it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from llmops.appserver import BackgroundApp, serve_forever
from llmops.sim.config import SimConfig
from llmops.sim.server import SimState, build_app, state_of

__all__ = ["SimServer", "serve"]

_T = TypeVar("_T")


def serve(host: str, port: int, config: SimConfig) -> None:
    """Serve ``config`` on host:port until SIGINT or SIGTERM (blocking)."""
    serve_forever(build_app(config), host, port, "simulator listening on http://{host}:{port}/v1")


class SimServer(BackgroundApp):
    """The simulator on a free port in a background thread; use as a (async) context manager.

    ``with SimServer(SimConfig()) as sim: client.post(sim.base_url + "/chat/completions")``
    """

    _thread_name = "llmops-sim"

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(host, port)
        self._config = config if config is not None else SimConfig()

    def _build_app(self) -> web.Application:
        return build_app(self._config)

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def _call(self, fn: Callable[[SimState], _T]) -> _T:
        """Run ``fn`` on the server's loop, where the state lives, and return its result."""
        return self._on_loop(lambda app: fn(state_of(app)))

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
