"""The gateway's housekeeping task: leases, expired holds, old reservation rows.

One task per gateway, on the event loop that serves its calls, started by the first
call. Every ``interval_s`` it returns idle rate-limit slices and cap headroom and renews
the leases in use; every ``sweep_s`` it releases holds and leases that crashed processes
left behind (so a full cap is freed without waiting for a refusal to sweep); every
``prune_s`` it deletes finished ``budget_reservations`` rows older than ``retention``.
Any gateway process may do the sweeps: they lock what they change, so two at once are
harmless. A failing round is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from llmops.gateway.budget import BudgetManager
from llmops.gateway.budget_leases import CapLeases

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upkeep:
    """How often the gateway does its housekeeping."""

    interval_s: float = 0.5
    sweep_s: float = 30.0
    prune_s: float = 3600.0
    retention: timedelta = timedelta(days=7)


class Keeper:
    """Runs :class:`Upkeep` for one gateway until :meth:`stop`."""

    def __init__(
        self, upkeep: Upkeep, limiter: Any, leases: CapLeases, budgets: BudgetManager
    ) -> None:
        self.upkeep = upkeep
        self.limiter = limiter
        self.leases = leases
        self.budgets = budgets
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    def ensure_running(self) -> None:
        """Start the task on the running loop unless it runs there already."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._stop), name="llmops-gateway-upkeep"
        )

    async def stop(self) -> None:
        """Finish the round under way, if any, and stop."""
        task, stop = self._task, self._stop
        self._task = self._stop = None
        if task is None or stop is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            task.cancel()  # its loop is gone or elsewhere: nothing to wait for here
            return
        stop.set()
        await task

    async def _run(self, stop: asyncio.Event) -> None:
        swept = pruned = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self.upkeep.interval_s)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            try:
                slices = getattr(self.limiter, "upkeep", None)
                if slices is not None:
                    await slices()
                await asyncio.to_thread(self.leases.upkeep)
                if now - swept >= self.upkeep.sweep_s:
                    swept = now
                    await asyncio.to_thread(self.budgets.expire_stale)
                if now - pruned >= self.upkeep.prune_s:
                    pruned = now
                    removed = await asyncio.to_thread(self.budgets.prune, self.upkeep.retention)
                    if removed:
                        logger.info("deleted %d finished budget reservation(s)", removed)
            except Exception as exc:  # the next round tries again; calls are unaffected
                logger.warning("gateway upkeep failed: %s", exc)
