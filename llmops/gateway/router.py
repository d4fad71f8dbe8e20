"""Build the LiteLLM Router from the gateway config, and translate LiteLLM's errors.

LiteLLM is imported here only, inside functions: its import costs seconds.
"""

from __future__ import annotations

from typing import Any

from llmops.errors import (
    ContentPolicyError,
    GatewayError,
    PermanentError,
    RetryableError,
)
from llmops.gateway.config import GatewayConfig


def build_router(config: GatewayConfig) -> Any:
    """A ``litellm.Router`` serving every model group of ``config``."""
    import litellm

    litellm.suppress_debug_info = True
    model_list: list[dict[str, Any]] = []
    for group_name, group in config.model_groups.items():
        timeout = group.timeout_s or config.settings.timeout_s
        for dep in group.deployments:
            params: dict[str, Any] = {
                "model": dep.model,
                "timeout": timeout,
                # Retries happen in one place, the Router; the OpenAI SDK's own two
                # retries would multiply them (and cost ~5 s per 429).
                "max_retries": 0,
            }
            for key in ("api_base", "api_key", "api_version", "rpm", "tpm", "weight"):
                value = getattr(dep, key)
                if value is not None:
                    params[key] = value
            model_list.append(
                {"model_name": group_name, "litellm_params": params, "model_info": {"id": dep.id}}
            )
    fallbacks = [{name: g.fallbacks} for name, g in config.model_groups.items() if g.fallbacks]
    return litellm.Router(  # type: ignore[attr-defined]
        model_list=model_list,
        fallbacks=fallbacks,
        num_retries=config.settings.num_retries,
        timeout=config.settings.timeout_s,
    )


_RETRYABLE_BY_NAME = {
    "RateLimitError": "rate_limit",
    "Timeout": "timeout",
    "APITimeoutError": "timeout",
    "APIConnectionError": "connection",
    "ServiceUnavailableError": "server_error",
    "InternalServerError": "server_error",
    "BadGatewayError": "server_error",
}
_PERMANENT_BY_NAME = {
    "ContextWindowExceededError": "context_window",
    "BadRequestError": "bad_request",
    "UnprocessableEntityError": "bad_request",
    "AuthenticationError": "auth",
    "PermissionDeniedError": "auth",
    "NotFoundError": "not_found",
}


def translate_error(exc: BaseException) -> GatewayError | None:
    """Map a LiteLLM/OpenAI exception to llmops's tree; ``None`` if it is not one of theirs."""
    module = type(exc).__module__
    if not module.startswith(("litellm", "openai", "httpx")):
        return None
    message = str(exc).split("\n", 1)[0][:500]
    for cls in type(exc).__mro__:
        if cls.__name__ == "ContentPolicyViolationError":
            return ContentPolicyError(message, error_class="content_policy")
        if cls.__name__ in _RETRYABLE_BY_NAME:
            return RetryableError(message, error_class=_RETRYABLE_BY_NAME[cls.__name__])
        if cls.__name__ in _PERMANENT_BY_NAME:
            return PermanentError(message, error_class=_PERMANENT_BY_NAME[cls.__name__])
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return RetryableError(
            message, error_class="rate_limit" if status == 429 else "server_error"
        )
    return PermanentError(message, error_class="provider_error")
