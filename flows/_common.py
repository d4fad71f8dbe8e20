"""What every flow shares: settings, the ops DB engine, the gateway, the retry condition."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Engine

from llmops.db.engine import make_engine
from llmops.errors import is_retryable
from llmops.gateway.config import load_gateway_config
from llmops.gateway.core import Gateway
from llmops.gateway.ratelimit import make_rate_limiter
from llmops.settings import Settings, apply_offline_defaults, get_settings


def settings() -> Settings:
    """Settings, with the offline defaults applied to this process."""
    current = get_settings()
    apply_offline_defaults(current)
    return current


@lru_cache(maxsize=4)
def ops_engine(url: str) -> Engine:
    """One pooled engine per database URL per process."""
    return make_engine(url)


def gateway() -> Gateway:
    """A gateway built from the current settings and ``config/gateway.yaml``."""
    current = settings()
    engine = ops_engine(current.resolved_database_url)
    hash_key = current.redaction_hash_key
    return Gateway(
        load_gateway_config(current.gateway_config),
        engine,
        limiter=make_rate_limiter(current.redis_url, engine),
        default_max_tokens=current.default_max_tokens,
        redaction_hash_key=hash_key.get_secret_value() if hash_key else None,
        log_text=current.log_text,
    )


async def retry_if_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry transient failures only, never permanent ones."""
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_retryable(exc)
