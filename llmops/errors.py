"""The exception tree of llmops.

::

    LLMOpsError
    ├── ConfigError                 bad config file or setting (file, field, reason)
    ├── DatabaseUnavailable         the ops DB does not answer
    ├── ValidationError             bad input from a caller (permanent)       HTTP 400
    ├── AuthError                   missing, unknown or revoked API key       HTTP 401
    ├── PricingError                a model without a price (permanent, never billed as $0)
    └── GatewayError                a call through the gateway failed
        ├── RetryableError          worth retrying: timeout, 429, 5xx, connection  HTTP 502/504
        │   └── RateLimited         a tenant/feature rate limit (retry_after_s)    HTTP 429
        └── PermanentError          not worth retrying: 4xx, bad request, content policy
            ├── BudgetExceeded      a hard spend cap would be exceeded              HTTP 402
            ├── PolicyBlocked       redaction policy "block" matched the request    HTTP 400
            └── ContentPolicyError  the provider refused the content

``is_retryable(exc)`` is what Prefect retry conditions and the queue use.
"""

from __future__ import annotations

from decimal import Decimal


class LLMOpsError(Exception):
    """Base of every error llmops raises on purpose."""


class ConfigError(LLMOpsError):
    """A configuration file or setting is invalid."""

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file, self.field, self.reason = file, field, reason
        super().__init__(f"{file}: {field}: {reason}")


class DatabaseUnavailable(LLMOpsError):
    """The ops database cannot be reached."""


class ValidationError(LLMOpsError):
    """A caller sent something invalid."""


class AuthError(LLMOpsError):
    """The caller's API key is missing, unknown or revoked."""


class PricingError(LLMOpsError):
    """A model has no price in the price book and is not marked free."""


class GatewayError(LLMOpsError):
    """A call through the gateway failed."""

    error_class: str = "gateway_error"

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        if error_class:
            self.error_class = error_class


class RetryableError(GatewayError):
    """A transient failure: retrying the same call may succeed."""

    error_class = "retryable"


class RateLimited(RetryableError):
    """A rate limit of llmops itself (not the provider's) refused the request."""

    error_class = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, limit: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit


class PermanentError(GatewayError):
    """A failure that will repeat on retry."""

    error_class = "permanent"


class BudgetExceeded(PermanentError):
    """A hard spend cap would be exceeded by this call."""

    error_class = "budget_exceeded"
    #: The worst case the call needed (USD), when known: a queue can tell a cap that only
    #: holds of other calls fill (the call fits once they settle) from one that is spent.
    needed_usd: Decimal | None = None


class PolicyBlocked(PermanentError):
    """The redaction policy blocks this request (an entity in ``block`` mode was found)."""

    error_class = "pii_blocked"


class ContentPolicyError(PermanentError):
    """The provider refused the content."""

    error_class = "content_policy"


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the operation that raised ``exc`` may succeed."""
    return isinstance(exc, RetryableError)
