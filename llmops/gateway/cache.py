"""Exact-match response cache, per tenant: in-process (TTL + LRU) or Redis.

Keys hash the tenant, the model group, the redacted messages and the parameters that
change an answer, so tenants never see each other's answers and PII never reaches the
cache in clear. Entries are kept ``retain_s`` (for stale-if-error) and served as fresh
hits only while younger than the feature's ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Protocol

#: Request parameters that change the answer (everything else, e.g. user, does not).
_KEY_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer: the (redacted) text as the provider produced it, and its usage."""

    text: str
    finish_reason: str | None
    model: str | None
    deployment_id: str | None
    input_tokens: int
    output_tokens: int
    stored_at: float

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.stored_at)


def cache_key(
    tenant_id: str, group: str, messages: list[dict[str, Any]], params: dict[str, Any]
) -> str:
    """A stable key for one exact request of one tenant."""
    material = {
        "tenant": tenant_id,
        "group": group,
        "messages": messages,
        "params": {k: params[k] for k in _KEY_PARAMS if params.get(k) is not None},
    }
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...
    async def set(self, key: str, answer: CachedAnswer, retain_s: float) -> None: ...
    async def aclose(self) -> None: ...


class InProcessCache:
    """A bounded LRU with per-entry expiry, for one process."""

    def __init__(self, max_entries: int = 10_000, clock: Any = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()

    async def get(self, key: str) -> CachedAnswer | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, answer = item
        if expires <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return answer

    async def set(self, key: str, answer: CachedAnswer, retain_s: float) -> None:
        self._data[key] = (self.clock() + retain_s, answer)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def aclose(self) -> None:
        self._data.clear()


class RedisCache:
    """Entries as JSON strings with a Redis expiry, shared by every process."""

    def __init__(self, url: str, *, prefix: str = "llmops:cache:") -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(url)

    async def get(self, key: str) -> CachedAnswer | None:
        raw = await self._redis.get(self.prefix + key)
        return CachedAnswer(**json.loads(raw)) if raw else None

    async def set(self, key: str, answer: CachedAnswer, retain_s: float) -> None:
        await self._redis.set(
            self.prefix + key, json.dumps(asdict(answer)), ex=max(1, int(retain_s))
        )

    async def aclose(self) -> None:
        await asyncio.shield(self._redis.aclose())


def make_cache(redis_url: str | None) -> ResponseCache:
    """Redis when configured, else in-process."""
    return RedisCache(redis_url) if redis_url else InProcessCache()
