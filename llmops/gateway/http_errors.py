"""llmops errors as HTTP responses in OpenAI's error shape.

::

    exception                                        status  type / code
    ValidationError (bad body, unknown model group)  400     invalid_request_error / invalid_request
    InvalidRequest, body over the size limit         413     invalid_request_error /
                                                               request_too_large
    PolicyBlocked                                    400     invalid_request_error / pii_blocked
    ContentPolicyError (the provider refused)        400     invalid_request_error /
                                                               content_policy_violation
    PermanentError bad_request                       400     invalid_request_error / bad_request
    PermanentError context_window                    400     invalid_request_error /
                                                               context_length_exceeded
    AuthError                                        401     invalid_request_error / invalid_api_key
    BudgetExceeded                                   402     insufficient_quota / budget_exceeded
    RateLimited (Retry-After: seconds, rounded up)   429     rate_limit_error / rate_limit_exceeded
    PermanentError, other classes (upstream)         502     upstream_error / its error_class
    RetryableError (upstream 5xx, 429, connection)   502     upstream_error / its error_class
    RetryableError with error_class "timeout"        504     timeout_error / timeout
    DatabaseUnavailable                              503     server_error / database_unavailable
    RetryableError rate_limiter_unavailable (Redis)  503     server_error / rate_limiter_unavailable
    PricingError                                     500     server_error / unpriced_model
    anything else                                    500     server_error / internal_error
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import orjson
from starlette.responses import Response

from llmops.errors import (
    AuthError,
    BudgetExceeded,
    ContentPolicyError,
    DatabaseUnavailable,
    GatewayError,
    PermanentError,
    PolicyBlocked,
    PricingError,
    RateLimited,
    RetryableError,
    ValidationError,
)

__all__ = ["HttpError", "error_response", "http_error"]

logger = logging.getLogger("llmops.gateway.http")

_CLIENT_ERROR_CLASSES = {"bad_request": "bad_request", "context_window": "context_length_exceeded"}


@dataclass(frozen=True)
class HttpError:
    """How one failure is answered; ``error_class`` labels the errors metric."""

    status: int
    type: str
    code: str | None
    message: str
    error_class: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def http_error(exc: BaseException) -> HttpError:
    """The HTTP answer to ``exc`` (see the module table)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ValidationError):
        return HttpError(
            getattr(exc, "status", 400),
            "invalid_request_error",
            getattr(exc, "code", None) or "invalid_request",
            message,
            "validation",
            param=getattr(exc, "param", None),
        )
    if isinstance(exc, AuthError):
        return HttpError(
            401,
            "invalid_request_error",
            "invalid_api_key",
            message,
            "auth",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(exc, GatewayError):
        return _gateway_error(exc, message)
    if isinstance(exc, DatabaseUnavailable):
        logger.error("ops database unavailable: %s", exc)
        return HttpError(
            503,
            "server_error",
            "database_unavailable",
            "the gateway's database is unavailable; retry later",
            "database",
        )
    if isinstance(exc, PricingError):
        logger.error("unpriced model: %s", exc)
        return HttpError(500, "server_error", "unpriced_model", message, "pricing")
    logger.error("internal error in the HTTP gateway", exc_info=exc)
    return HttpError(500, "server_error", "internal_error", "internal server error", "internal")


def _gateway_error(exc: GatewayError, message: str) -> HttpError:
    kind = exc.error_class
    if isinstance(exc, RateLimited):
        retry_after = str(max(0, math.ceil(exc.retry_after_s)))
        return HttpError(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            message,
            kind,
            headers={"Retry-After": retry_after},
        )
    if isinstance(exc, BudgetExceeded):
        return HttpError(402, "insufficient_quota", "budget_exceeded", message, kind)
    if isinstance(exc, PolicyBlocked):
        return HttpError(400, "invalid_request_error", "pii_blocked", message, kind)
    if isinstance(exc, ContentPolicyError):
        return HttpError(400, "invalid_request_error", "content_policy_violation", message, kind)
    if isinstance(exc, PermanentError) and kind in _CLIENT_ERROR_CLASSES:
        return HttpError(400, "invalid_request_error", _CLIENT_ERROR_CLASSES[kind], message, kind)
    if isinstance(exc, RetryableError) and kind == "timeout":
        return HttpError(504, "timeout_error", "timeout", message, kind)
    if kind == "rate_limiter_unavailable":  # our own dependency, not the provider
        logger.error("rate limiter unavailable: %s", exc)
        busy = "the gateway's rate limiter is unavailable; retry later"
        return HttpError(503, "server_error", kind, busy, kind)
    return HttpError(502, "upstream_error", kind, message, kind)


def error_body(error: HttpError) -> bytes:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": error.param,
                "code": error.code,
            }
        }
    )


def error_response(error: HttpError, request_id: str | None = None) -> Response:
    """A JSON response for ``error``, with its headers and the request id when known."""
    headers = dict(error.headers)
    if request_id:
        headers["X-LLMOps-Request-Id"] = request_id
    return Response(
        error_body(error),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )
