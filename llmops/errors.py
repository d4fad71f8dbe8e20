"""The exception tree of llmops.

::

    LLMOpsError
    ├── ConfigError                 bad config file or setting (file, field, reason)
    ├── DatabaseUnavailable         the ops DB does not answer
    ├── ValidationError             bad input from a caller (permanent)
    ├── PricingError                a model without a price (permanent, never billed as $0)
    └── GatewayError                a provider call failed
        ├── RetryableError          worth retrying: timeout, 429, 5xx, connection
        └── PermanentError          not worth retrying: 4xx, bad request, content policy
            ├── BudgetExceeded      a hard spend cap would be exceeded
            └── ContentPolicyError  the provider refused the content

``is_retryable(exc)`` is what Prefect retry conditions and the queue use.
"""

from __future__ import annotations


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


class PermanentError(GatewayError):
    """A failure that will repeat on retry."""

    error_class = "permanent"


class BudgetExceeded(PermanentError):
    """A hard spend cap would be exceeded by this call."""

    error_class = "budget_exceeded"


class ContentPolicyError(PermanentError):
    """The provider refused the content."""

    error_class = "content_policy"


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the operation that raised ``exc`` may succeed."""
    return isinstance(exc, RetryableError)
