"""Every attempt LiteLLM's Router makes for a request: which deployment, and how it failed.

The Router retries and falls back internally and reports only the final outcome; a
LiteLLM callback sees each failed attempt. The gateway registers a request id in the
call's metadata, and reads the attempts back when the call ends.
"""

from __future__ import annotations

from typing import Any

from llmops.gateway.router import translate_error

METADATA_KEY = "llmops_request_id"


def _base() -> type:
    from litellm.integrations.custom_logger import CustomLogger

    return CustomLogger


class _Tracker:
    """Failed attempts by request id, for requests currently in flight."""

    def __init__(self) -> None:
        self.failures: dict[str, list[tuple[str, str]]] = {}

    def begin(self, request_id: str) -> None:
        self.failures[request_id] = []

    def end(self, request_id: str) -> list[tuple[str, str]]:
        """The (deployment id, error class) of every failed attempt, in order."""
        return self.failures.pop(request_id, [])

    def record(self, kwargs: dict[str, Any]) -> None:
        params = kwargs.get("litellm_params") or {}
        request_id = (params.get("metadata") or {}).get(METADATA_KEY)
        attempts = self.failures.get(request_id) if request_id else None
        if attempts is None:
            return
        deployment = str((params.get("model_info") or {}).get("id") or "?")
        exc = kwargs.get("exception")
        mapped = translate_error(exc) if isinstance(exc, BaseException) else None
        attempts.append((deployment, mapped.error_class if mapped else "error"))


_STATE = _Tracker()
_registered = False


def tracker() -> _Tracker:
    """The process-wide tracker; registers its LiteLLM callback on first use."""
    global _registered
    if not _registered:
        import litellm

        # Method name and signature must be exactly LiteLLM's, or events are dropped silently.
        class AttemptLogger(_base()):  # type: ignore[misc]
            async def async_log_failure_event(
                self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
            ) -> None:
                _STATE.record(kwargs)

        litellm.callbacks = [*litellm.callbacks, AttemptLogger()]
        _registered = True
    return _STATE
