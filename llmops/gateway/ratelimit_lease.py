"""Rate limits without a round trip per call: per-process leases of bucket capacity.

Wraps a shared limiter (the ops DB or Redis). For a limit large enough to lease from,
the process takes a slice of the bucket at once (``capacity / divisor`` units, 2% by
default, but never less than the call in hand needs) and admits calls from it in
memory; the shared bucket counted those units when they were taken, so the limit still
holds across processes. Smaller limits, and calls whose limits are not all leasable, go
to the shared store call by call, exactly as before.

Accuracy: a unit is counted when the slice is taken, not when a call uses it. Slices
live at most ``max_age_s`` (1 s): after that their unused units go back to the shared
bucket (:meth:`LeasedRateLimiter.upkeep`, also on :meth:`aclose`). So over any interval
of t seconds at most ``N + N * t / 60`` units plus the slices outstanding (at most one
per process, 2% of N each) are admitted; within one process exactly N go through at one
instant, as without leases (the last slice is cut to what is left). Another process may
be refused units that sit unused in a slice for up to ``max_age_s``.

Token settlement stays in memory too: unused estimated tokens return to the slice; a
call that used more than it reserved pushes the excess to the shared bucket as debt.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llmops.errors import RateLimited
from llmops.gateway.ratelimit_core import (
    Charge,
    Clock,
    Permit,
    RateLimit,
    RateLimiter,
    plan,
    settlement,
    token_charges,
)

__all__ = ["LeasedRateLimiter", "SharedLimiter"]


class SharedLimiter(RateLimiter, Protocol):
    """A limiter whose buckets are shared by processes, with raw take and give."""

    async def take(self, charges: Sequence[Charge]) -> None: ...

    async def give(self, charges: Sequence[Charge]) -> None: ...


@dataclass
class _Slice:
    capacity: int
    granted: int = 0
    used: int = 0
    taken_at: float = 0.0

    @property
    def free(self) -> int:
        return self.granted - self.used


class LeasedRateLimiter:
    """A :class:`RateLimiter` that admits from slices of a shared limiter's buckets."""

    def __init__(
        self,
        shared: SharedLimiter,
        *,
        divisor: int = 50,
        max_age_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.shared = shared
        self.divisor = divisor
        self.max_age_s = max_age_s
        self._clock = clock
        self._slices: dict[str, _Slice] = {}
        self._lock = threading.Lock()
        self._growing: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    async def acquire(self, rules: list[tuple[str, RateLimit]], *, tokens: int) -> Permit:
        charges = plan(rules, tokens)
        if not charges:
            return Permit(tokens)
        if not all(self._leasable(charge) for charge in charges):
            return await self.shared.acquire(rules, tokens=tokens)
        if not self._take(charges):
            async with self._growing_lock():
                if not self._take(charges):
                    await self._grow(charges)
        return Permit(tokens, token_charges(charges), leased=True)

    async def settle(self, permit: Permit, *, actual_tokens: int) -> None:
        if not permit.leased:
            await self.shared.settle(permit, actual_tokens=actual_tokens)
            return
        debts: list[Charge] = []
        with self._lock:
            for charge in settlement(permit, actual_tokens):
                piece = self._slices.get(charge.name)
                if piece is None:
                    # Its slice went back meanwhile, counting this call's estimate as used:
                    # unused tokens stay counted (they drain), extra ones are debt.
                    if charge.amount > 0:
                        debts.append(charge)
                    continue
                piece.used = max(piece.used + charge.amount, 0)
                if piece.used > piece.granted:
                    debts.append(Charge(charge.name, charge.capacity, piece.used - piece.granted))
                    piece.granted = piece.used
        if debts:
            await self.shared.give(debts)

    async def upkeep(self, *, everything: bool = False) -> None:
        """Give the unused units of old slices (all, with ``everything``) back."""
        now = self._clock()
        returns: list[Charge] = []
        with self._lock:
            for name, piece in list(self._slices.items()):
                if everything or now - piece.taken_at >= self.max_age_s:
                    if piece.free > 0:
                        returns.append(Charge(name, piece.capacity, -piece.free))
                    del self._slices[name]
        if returns:
            await self.shared.give(returns)

    async def aclose(self) -> None:
        try:
            await self.upkeep(everything=True)
        finally:
            await self.shared.aclose()

    # -- internals -----------------------------------------------------------------------

    def _leasable(self, charge: Charge) -> bool:
        return charge.capacity // self.divisor >= max(2 * charge.amount, 2)

    def _take(self, charges: Sequence[Charge]) -> bool:
        now = self._clock()
        with self._lock:
            slices = [self._slices.get(charge.name) for charge in charges]
            for charge, piece in zip(charges, slices, strict=True):
                if piece is None or piece.free < charge.amount:
                    return False
                if now - piece.taken_at >= self.max_age_s:
                    return False
            for charge, piece in zip(charges, slices, strict=True):
                assert piece is not None
                piece.used += charge.amount
        return True

    async def _grow(self, charges: Sequence[Charge]) -> None:
        """Take fresh slices for ``charges`` from the shared store, then the call's units.

        A full slice first; if the bucket cannot spare one, just what the call needs, so
        the last units of a limit are admitted exactly (or :class:`RateLimited` says when).
        """
        await self.upkeep()  # old slices go back first, so their units are not stranded
        now = self._clock()
        # Hold what the slices still have, so that calls admitted meanwhile cannot use it.
        got: dict[str, int] = {}
        with self._lock:
            for charge in charges:
                piece = self._slices.get(charge.name)
                got[charge.name] = min(max(piece.free, 0), charge.amount) if piece else 0
                if piece is not None:
                    piece.used += got[charge.name]
        needs = [
            Charge(c.name, c.capacity, c.amount - got[c.name])
            for c in charges
            if c.amount > got[c.name]
        ]
        slices = [
            Charge(need.name, need.capacity, max(need.amount, need.capacity // self.divisor))
            for need in needs
        ]
        try:
            try:
                await self.shared.take(slices)
                taken = slices
            except RateLimited:
                await self.shared.take(needs)  # RateLimited if even that does not fit
                taken = needs
        except BaseException:
            with self._lock:
                for charge in charges:
                    piece = self._slices.get(charge.name)
                    if piece is not None:
                        piece.used = max(piece.used - got[charge.name], 0)
            raise
        with self._lock:
            for charge, need in zip(taken, needs, strict=True):
                piece = self._slices.get(charge.name)
                if piece is None:
                    piece = self._slices[charge.name] = _Slice(charge.capacity, taken_at=now)
                piece.granted += charge.amount
                piece.used += need.amount

    def _growing_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._growing is None or self._growing[0] is not loop:
            self._growing = (loop, asyncio.Lock())
        return self._growing[1]
