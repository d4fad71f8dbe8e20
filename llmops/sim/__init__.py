"""Provider simulator: an OpenAI-compatible HTTP server with latency and fault injection.

Tests, the demo and benchmarks point LiteLLM or the OpenAI SDK at it instead of a real
provider. ``SimConfig`` describes per-model profiles (``config/sim.yaml``), ``SimServer``
runs one in-process, ``serve`` runs one in the foreground for ``llmops sim serve``.
"""

from llmops.sim.config import FailFirst, LatencyDist, Profile, ResponseRule, SimConfig
from llmops.sim.engine import Completion, complete, count_message_tokens, count_tokens
from llmops.sim.runtime import SimServer, serve
from llmops.sim.server import build_app

__all__ = [
    "Completion",
    "FailFirst",
    "LatencyDist",
    "Profile",
    "ResponseRule",
    "SimConfig",
    "SimServer",
    "build_app",
    "complete",
    "count_message_tokens",
    "count_tokens",
    "serve",
]
