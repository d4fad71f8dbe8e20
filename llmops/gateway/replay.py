"""Stored answers (cached, stale, static) replayed as a stream of LiteLLM chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.gateway.core import ChatResult


def mark(chunk: Any, **marks: Any) -> None:
    """Note how a chunk's answer was served, where LiteLLM keeps such metadata."""
    hidden = getattr(chunk, "_hidden_params", None)
    if isinstance(hidden, dict):
        hidden.update({f"llmops_{name}": value for name, value in marks.items()})


def as_chunks(result: ChatResult) -> list[Any]:
    """A stored (cached, stale or static) answer as a stream: content, finish, usage."""
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices
    from litellm.types.utils import Usage as LiteLLMUsage

    model = result.model or result.model_group
    chunks = [
        ModelResponseStream(
            id=result.request_id,
            model=model,
            choices=[
                StreamingChoices(
                    index=0, delta=Delta(role="assistant", content=result.text), finish_reason=None
                )
            ],
        ),
        ModelResponseStream(
            id=result.request_id,
            model=model,
            choices=[
                StreamingChoices(
                    index=0, delta=Delta(content=None), finish_reason=result.finish_reason or "stop"
                )
            ],
        ),
        ModelResponseStream(
            id=result.request_id,
            model=model,
            choices=[],
            usage=LiteLLMUsage(
                prompt_tokens=result.usage.input_tokens,
                completion_tokens=result.usage.output_tokens,
                total_tokens=result.usage.input_tokens + result.usage.output_tokens,
            ),
        ),
    ]
    for chunk in chunks:
        mark(
            chunk,
            cache_hit=result.cache_hit,
            degraded=result.degraded,
            stale_age_s=result.stale_age_s,
        )
    return chunks
