"""Build the LiteLLM Router from the gateway config, and translate LiteLLM's errors.

LiteLLM is imported here only, inside functions: its import costs seconds.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from llmops.errors import (
    ContentPolicyError,
    GatewayError,
    PermanentError,
    RetryableError,
)
from llmops.gateway.config import GatewayConfig, RetryPolicy


def build_router(config: GatewayConfig) -> Any:
    """A ``litellm.Router`` serving every model group of ``config``."""
    from llmops.settings import apply_offline_env

    # The Python API may reach here first: without this, importing LiteLLM fetches its
    # model cost map from the network (retrying for seconds when offline). The gateway
    # prices calls from its own price book; LiteLLM's bundled map is enough for limits.
    apply_offline_env()
    import litellm

    litellm.suppress_debug_info = True
    if not os.environ.get("LITELLM_LOG"):
        # The Router logs every failed request with a multi-line debug dump; the gateway
        # records each attempt in the request log instead. LITELLM_LOG=DEBUG brings it back.
        for name in ("LiteLLM Router", "LiteLLM"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
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
    groups = config.model_groups.items()
    default = config.settings.retries
    return litellm.Router(  # type: ignore[attr-defined]
        model_list=model_list,
        fallbacks=[{n: g.fallbacks} for n, g in groups if g.fallbacks],
        context_window_fallbacks=[
            {n: g.context_window_fallbacks} for n, g in groups if g.context_window_fallbacks
        ],
        content_policy_fallbacks=[
            {n: g.content_policy_fallbacks} for n, g in groups if g.content_policy_fallbacks
        ],
        num_retries=config.settings.num_retries,
        retry_policy=_retry_policy(default, config.settings.num_retries),
        model_group_retry_policy={
            n: _retry_policy(
                g.retries if g.retries is not None else default,
                config.settings.num_retries,
                has_fallbacks=bool(g.fallbacks),
            )
            for n, g in groups
            if g.retries is not None or g.fallbacks
        },
        timeout=config.settings.timeout_s,
        cooldown_time=config.settings.cooldown_s,
        allowed_fails=config.settings.allowed_fails,
    )


def _retry_policy(policy: RetryPolicy, default: int, *, has_fallbacks: bool = False) -> Any:
    """LiteLLM's RetryPolicy for ours: transient classes as configured, the rest never."""
    from litellm.types.router import RetryPolicy as LiteLLMRetryPolicy

    def pick(value: int | None) -> int:
        return default if value is None else value

    server = pick(policy.server_error)
    return LiteLLMRetryPolicy(
        RateLimitErrorRetries=pick(policy.rate_limit),
        InternalServerErrorRetries=server,
        ServiceUnavailableErrorRetries=server,
        TimeoutErrorRetries=pick(policy.timeout),
        # LiteLLM's DefaultRetries also covers its own "no deployments available" error,
        # raised while every deployment of the group rests in cooldown: a retry then only
        # sleeps a backoff (the rest lasts cooldown_s). With a fallback, move on at once.
        DefaultRetries=0 if has_fallbacks else pick(policy.connection),
        BadRequestErrorRetries=0,
        AuthenticationErrorRetries=0,
        ContentPolicyViolationErrorRetries=0,
        NotFoundErrorRetries=0,
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
