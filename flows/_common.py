"""What every flow shares: settings, the ops DB engine, the gateway, the retry condition."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import Engine

from blocks.secrets import apply_block_secrets
from llmops.db.engine import make_engine
from llmops.errors import is_retryable
from llmops.gateway.core import Gateway
from llmops.settings import Settings, apply_offline_defaults, get_settings
from llmops.telemetry import tracing

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def settings() -> Settings:
    """Settings, with secrets from blocks when deployed, and the offline defaults applied."""
    _secrets_from_blocks()
    current = get_settings()
    apply_offline_defaults(current)
    return current


@lru_cache(maxsize=1)
def _secrets_from_blocks() -> list[str]:
    """Once per process: in a deployment run, provider keys and DB URL come from blocks."""
    return apply_block_secrets()


@lru_cache(maxsize=4)
def ops_engine(url: str) -> Engine:
    """One pooled engine per database URL per process."""
    return make_engine(url)


def gateway() -> Gateway:
    """A gateway built from the current settings and ``config/gateway.yaml``."""
    current = settings()
    return Gateway.from_settings(current, ops_engine(current.resolved_database_url))


async def retry_if_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry transient failures only, never permanent ones."""
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_retryable(exc)


def traced(fn: F) -> F:
    """Put the flow run in an OpenTelemetry span carrying its Prefect run id.

    Goes under ``@flow``: ``@flow(...)`` then ``@traced`` then ``async def``. Gateway calls
    and jobs inside become its children. Exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is set; otherwise the span is a no-op.
    """

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        from prefect.runtime import flow_run

        tracing.configure()
        with tracing.flow_span(flow_run.flow_name or fn.__name__, flow_run.id):
            return await fn(*args, **kwargs)

    # Resolved types, not the strings of ``from __future__ import annotations``: Prefect
    # builds the parameter model from them, in this module's namespace, not the flow's.
    run.__annotations__ = typing.get_type_hints(fn)
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return cast(F, run)
