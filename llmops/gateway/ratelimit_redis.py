"""The Redis rate limiter: one Lua script per acquire or settle, atomic across processes.

A bucket is a hash ``{l: level, t: updated_at}`` under ``<prefix><limit name>``, expiring
once it has drained (an absent key is an empty bucket), so Redis holds only live limits.
The scripts mirror :func:`ratelimit_core.take` and :func:`ratelimit_core.give`: Redis runs
a script without interleaving any other command, so reading every key, deciding and
writing them all (or none, on a rejection) is one atomic step.

Time comes from the caller's ``clock`` as an argument, not from Redis ``TIME``: tests can
drive it, and the buckets agree with the other backends. The cost is that hosts must keep
their clocks in sync (NTP): a host ``s`` seconds ahead can drain ``s`` seconds' worth of a
bucket early, i.e. admit up to ``s * limit / 60`` extra units once.

The part of a key before its first ``/`` (``tenant:acme``) is a hash tag, so all the keys
of one request live in one Redis Cluster slot, as a multi-key script requires there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmops.errors import RetryableError
from llmops.gateway.ratelimit_core import (
    EPSILON,
    WINDOW_S,
    Charge,
    Clock,
    Permit,
    RateLimit,
    plan,
    rate_limited,
    settlement,
    token_charges,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisRateLimiter"]

# Shared head of both scripts. ARGV: now, window, epsilon, then capacity and amount per
# key. Numbers are written with %.17g so they read back bit for bit (tostring keeps 14).
_DRAIN = """
local now, window, epsilon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function drained(key, capacity)
  local state = redis.call('HMGET', key, 'l', 't')
  if not state[1] then return 0, now end
  local level, updated = tonumber(state[1]), tonumber(state[2])
  local elapsed = math.max(0, now - updated)
  return math.max(0, level - elapsed * capacity / window), math.max(now, updated)
end
local function store(key, level, updated, capacity)
  if level <= 0 then
    redis.call('DEL', key)
  else
    local fmt = '%.17g'
    redis.call('HSET', key, 'l', string.format(fmt, level), 't', string.format(fmt, updated))
    -- Gone once drained, plus a second of slack; an absent key is an empty bucket.
    redis.call('PEXPIRE', key, math.ceil(level * window / capacity * 1000) + 1000)
  end
end
"""

# Returns {1} when every key fits (and takes from all), else {0, index, wait seconds}.
_TAKE = (
    _DRAIN
    + """
local levels, times = {}, {}
local worst, worst_wait = 0, 0
for i = 1, #KEYS do
  local capacity, amount = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local level, updated = drained(KEYS[i], capacity)
  level = level + amount
  local excess = level - capacity
  if excess > epsilon then
    local wait = excess * window / capacity
    if wait > worst_wait then worst, worst_wait = i, wait end
  end
  levels[i], times[i] = level, updated
end
if worst > 0 then return {0, worst, string.format('%.17g', worst_wait)} end
for i = 1, #KEYS do store(KEYS[i], levels[i], times[i], tonumber(ARGV[2 + 2 * i])) end
return {1}
"""
)

_GIVE = (
    _DRAIN
    + """
for i = 1, #KEYS do
  local capacity, amount = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local level, updated = drained(KEYS[i], capacity)
  store(KEYS[i], math.max(0, level + amount), updated, capacity)
end
return {1}
"""
)


class RedisRateLimiter:
    """Rate limits in Redis (``LLMOPS_REDIS_URL``): one atomic script per call."""

    def __init__(self, url: str, *, prefix: str = "llmops:rl:", clock: Clock = time.time) -> None:
        # Imported here: redis takes ~0.3 s to import, and most runs use the ops DB.
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        self._errors = RedisError
        # from_url connects lazily, at the first command.
        self._redis: Redis = Redis.from_url(url)
        self._prefix = prefix
        self._clock = clock
        self._take: AsyncScript = self._redis.register_script(_TAKE)
        self._give: AsyncScript = self._redis.register_script(_GIVE)

    async def acquire(self, rules: list[tuple[str, RateLimit]], *, tokens: int) -> Permit:
        charges = plan(rules, tokens)
        if charges:
            reply = await self._run(self._take, charges)
            if reply[0] == 0:
                raise rate_limited(charges[int(reply[1]) - 1], float(reply[2]))
        return Permit(tokens, token_charges(charges))

    async def settle(self, permit: Permit, *, actual_tokens: int) -> None:
        charges = settlement(permit, actual_tokens)
        if charges:
            await self._run(self._give, charges)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def take(self, charges: Sequence[Charge]) -> None:
        """Take every charge, all or none (raises :class:`RateLimited`)."""
        if charges:
            reply = await self._run(self._take, charges)
            if reply[0] == 0:
                raise rate_limited(charges[int(reply[1]) - 1], float(reply[2]))

    async def give(self, charges: Sequence[Charge]) -> None:
        """Add each charge's amount (negative: give units back), never below empty."""
        if charges:
            await self._run(self._give, charges)

    def key(self, name: str) -> str:
        """The Redis key of a limit: ``llmops:rl:{tenant:acme}/feature:x rpm``."""
        scope = len(name.split(" ", 1)[0].split("/", 1)[0])
        return f"{self._prefix}{{{name[:scope]}}}{name[scope:]}"

    async def _run(self, script: AsyncScript, charges: Sequence[Charge]) -> list[Any]:
        args: list[float | int] = [self._clock(), WINDOW_S, EPSILON]
        for charge in charges:
            args += [charge.capacity, charge.amount]
        try:
            reply: list[Any] = await script(keys=[self.key(c.name) for c in charges], args=args)
        except self._errors as exc:
            raise RetryableError(
                f"rate limiter: Redis failed: {exc}", error_class="rate_limiter_unavailable"
            ) from exc
        return reply
