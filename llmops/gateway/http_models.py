"""The OpenAI chat completion request as the HTTP gateway accepts it, and its translation.

The body is parsed and validated in one pass (pydantic's JSON parser); any problem raises
:class:`InvalidRequest` naming the parameter, which the app turns into a 400 in OpenAI's
error shape. Unknown parameters are refused rather than silently dropped.
"""

from __future__ import annotations

from typing import Any, Literal, Required, cast

import pydantic
from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from llmops.errors import ValidationError
from llmops.gateway.core import ChatRequest

__all__ = [
    "ChatCompletionRequest",
    "InvalidRequest",
    "parse_chat_request",
    "to_chat_request",
]

#: request_log column widths (llmops.db.models.RequestLog).
MAX_FEATURE_LENGTH = 64
MAX_ACTION_ID_LENGTH = 100


class InvalidRequest(ValidationError):
    """A request the HTTP layer refuses before it reaches the core (HTTP 400 unless said)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


@with_config(ConfigDict(extra="allow"))
class ChatMessage(TypedDict, total=False):
    """One message; fields other than ``role`` pass through to the provider untouched."""

    role: Required[Literal["system", "developer", "user", "assistant", "tool", "function"]]
    content: str | list[dict[str, Any]] | None
    name: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` (OpenAI's Chat Completions API)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=100, description="The model group")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None


#: Passed to the provider as given when set (``max_tokens`` and ``temperature`` are
#: fields of :class:`ChatRequest`; ``n``, ``stream*`` and ``metadata`` are handled here).
_PASS_THROUGH = (
    "top_p",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "seed",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
)


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Validate a request body; :class:`InvalidRequest` says what is wrong and where."""
    if not body:
        raise InvalidRequest("request body is empty: send an OpenAI chat completion request")
    try:
        chat = ChatCompletionRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    if chat.n is not None and chat.n > 1:
        raise InvalidRequest("n > 1 is not supported: send one request per choice", param="n")
    if chat.stream_options is not None and not chat.stream:
        raise InvalidRequest(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    if chat.max_tokens is not None and chat.max_completion_tokens is not None:
        raise InvalidRequest(
            "set max_completion_tokens or max_tokens, not both", param="max_tokens"
        )
    return chat


def to_chat_request(
    chat: ChatCompletionRequest,
    *,
    tenant_id: str,
    feature: str | None,
    action_id: str | None,
) -> ChatRequest:
    """The core's request for a validated body, a tenant, and the caller's attribution."""
    feature = feature or (chat.metadata or {}).get("feature")
    if not feature:
        raise InvalidRequest(
            "a feature is required: send the X-LLMOps-Feature header or metadata.feature",
            param="metadata.feature",
        )
    if len(feature) > MAX_FEATURE_LENGTH:
        raise InvalidRequest(
            f"feature is longer than {MAX_FEATURE_LENGTH} characters", param="metadata.feature"
        )
    if action_id is not None and len(action_id) > MAX_ACTION_ID_LENGTH:
        raise InvalidRequest(
            f"X-LLMOps-Action-Id is longer than {MAX_ACTION_ID_LENGTH} characters",
            param="X-LLMOps-Action-Id",
        )
    params: dict[str, Any] = {}
    for name in _PASS_THROUGH:
        value = getattr(chat, name)
        if value is not None:
            params[name] = value
    return ChatRequest(
        tenant_id=tenant_id,
        feature_id=feature,
        action_id=action_id or None,
        # TypedDicts validate to plain dicts: no copy needed.
        messages=cast("list[dict[str, Any]]", chat.messages),
        model_group=chat.model,
        max_tokens=chat.max_completion_tokens or chat.max_tokens,
        temperature=chat.temperature,
        params=params,
    )


def _invalid(exc: pydantic.ValidationError) -> InvalidRequest:
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    kind = error["type"]
    loc = ".".join(str(part) for part in error["loc"])
    if kind == "json_invalid":
        detail = error["msg"].removeprefix("Invalid JSON: ")
        return InvalidRequest(f"request body is not valid JSON: {detail}")
    if kind == "model_type" and not loc:
        return InvalidRequest(
            "request body must be a JSON object: an OpenAI chat completion request"
        )
    if kind == "missing":
        return InvalidRequest(f"missing required parameter: {loc!r}", param=loc)
    if kind == "extra_forbidden":
        return InvalidRequest(f"unrecognized request argument: {loc!r}", param=loc)
    return InvalidRequest(f"invalid value for {loc!r}: {error['msg']}", param=loc)
