"""Spend caps without a database round trip per call: per-process leases of headroom.

A gateway process leases headroom on each cap window it serves (an atomic reservation in
the ops DB, :mod:`budget_lease_store`) and then admits calls against it in memory: a
call's worst case is held on the lease of every cap that applies, its actual cost is
booked when it returns, and the spend reaches the ledger in the request log's group
commit, in the same transaction as the calls' rows. The cap guarantee across processes
is unchanged: ``spent + reserved + leased <= limit`` in the DB at every moment, and no
process admits more than its leases hold.

Sizing: a lease grows by at most ``fraction`` (10%) of the cap's remaining headroom at a
time, and by about ``calls_per_lease`` worst cases, but always by at least what the call
in hand needs. Far from the cap a process asks the DB once every ~64 calls; near it the
leases shrink to single calls, so one process alone admits exactly as much as per-call
reservations would. With several processes, headroom leased but unused by one can refuse
a call in another until it is returned: leases idle for ``idle_s`` go back, all of them
at :meth:`CapLeases.aclose`. Leases are renewed while the process lives and expire
``ttl`` after it stops (the sweep in :meth:`BudgetManager.expire_stale` returns them).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from llmops.errors import BudgetExceeded, DatabaseUnavailable
from llmops.gateway.budget import BudgetManager
from llmops.gateway.budget_lease_store import Return, Spend, Want
from llmops.gateway.budget_ledger import ZERO, LedgerKey
from llmops.gateway.budget_types import BudgetAlert, parse_money, window_start

_ATTEMPTS = 4


@dataclass
class _Lease:
    """This process's side of one lease (one cap window)."""

    key: LedgerKey
    lease_id: str | None = None
    ledger_id: int | None = None
    granted: Decimal = ZERO  # what the DB lease holds, as far as this process knows
    held: Decimal = ZERO  # worst cases of calls in flight
    pending: Decimal = ZERO  # settled spend not yet booked in the ledger
    booking: Decimal = ZERO  # settled spend in a transaction under way
    valid_until: float = 0.0  # monotonic; past it the DB may have swept the lease
    last_used: float = 0.0

    @property
    def free(self) -> Decimal:
        return self.granted - self.held - self.pending - self.booking


@dataclass
class LeaseHold:
    """A call's worst case held on the leases of every cap that applies."""

    keys: tuple[LedgerKey, ...]
    amount: Decimal
    done: bool = field(default=False)


class CapLeases:
    """Admits calls against spend caps from in-memory leases (thread-safe, async API)."""

    def __init__(
        self,
        budgets: BudgetManager,
        *,
        ttl: timedelta = timedelta(minutes=2),
        fraction: Decimal = Decimal("0.1"),
        calls_per_lease: int = 64,
        idle_s: float = 2.0,
    ) -> None:
        self.budgets = budgets
        self.ttl = ttl
        self.fraction = fraction
        self.calls_per_lease = calls_per_lease
        self.idle_s = idle_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._leases: dict[LedgerKey, _Lease] = {}
        self._lock = threading.Lock()
        self._growing: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    # -- the call path ---------------------------------------------------------------------

    async def hold(self, tenant_id: str, feature_id: str, amount_usd: Decimal) -> LeaseHold:
        """Hold ``amount_usd`` on every cap that applies, or raise :class:`BudgetExceeded`."""
        amount = parse_money(amount_usd, "amount_usd", round_up=True)
        if self.budgets.caps_cached():
            caps = self.budgets.applicable_caps(tenant_id, feature_id)
        else:  # the list is read again (once a second): not on the event loop
            caps = await asyncio.to_thread(self.budgets.applicable_caps, tenant_id, feature_id)
        if not caps or amount == 0:
            return LeaseHold((), amount, done=True)
        now = self.budgets.clock()
        keys = tuple(sorted({(cap.id, window_start(cap.period, now)) for cap in caps}))
        if self._take(keys, amount):
            return LeaseHold(keys, amount)
        async with self._growing_lock():  # one extension at a time; others reuse it
            for _ in range(_ATTEMPTS):
                if self._take(keys, amount):
                    return LeaseHold(keys, amount)
                # _grow holds ``amount`` in the same step as it records the grant, so calls
                # admitted from memory meanwhile cannot take what was extended for this one.
                if await self._grow_and_take(keys, amount):
                    return LeaseHold(keys, amount)
        raise DatabaseUnavailable("budget leases: could not extend after several attempts")

    async def _grow_and_take(self, keys: tuple[LedgerKey, ...], amount: Decimal) -> bool:
        grow = asyncio.ensure_future(asyncio.to_thread(self._grow, keys, amount))
        try:
            # The thread finishes (and records the grant) even if the caller leaves.
            return await asyncio.shield(grow)
        except asyncio.CancelledError:

            def give_back(done: asyncio.Future[bool]) -> None:
                if not done.cancelled() and done.exception() is None and done.result():
                    self.release(LeaseHold(keys, amount))

            grow.add_done_callback(give_back)
            raise

    def _growing_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._growing is None or self._growing[0] is not loop:
            self._growing = (loop, asyncio.Lock())
        return self._growing[1]

    def settle(self, hold: LeaseHold, cost: Decimal) -> None:
        """Book a returned call's actual cost; the ledger gets it with the next commit."""
        if hold.done:
            return
        hold.done = True
        actual = parse_money(cost, "cost_usd")
        now = time.monotonic()
        with self._lock:
            for key in hold.keys:
                lease = self._lease(key)
                lease.held -= hold.amount
                lease.pending += actual
                lease.last_used = now

    def release(self, hold: LeaseHold) -> None:
        """Give a failed call's worst case back to the leases."""
        if hold.done:
            return
        hold.done = True
        with self._lock:
            for key in hold.keys:
                self._lease(key).held -= hold.amount

    # -- booking spend -------------------------------------------------------------------

    def book(self, conn: Connection) -> tuple[list[Spend], list[BudgetAlert]]:
        """Book pending spend in the caller's transaction (the request log's batch).

        Pass the first item of the result to :meth:`booked` once the transaction ended.
        """
        with self._lock:
            spends = [
                Spend(lease.key, lease.lease_id, lease.pending, lease.ledger_id)
                for lease in self._leases.values()
                if lease.pending > 0
            ]
            for lease in self._leases.values():
                lease.booking += lease.pending
                lease.pending = ZERO
        if not spends:
            return [], []
        try:
            alerts = self.budgets.leases.apply_spend(conn, spends, self.budgets.clock())
        except BaseException:
            self.booked(spends, committed=False)
            raise
        return spends, alerts

    def booked(self, spends: list[Spend], *, committed: bool) -> None:
        """The transaction of :meth:`book` committed (the lease shrank), or not."""
        with self._lock:
            for spend in spends:
                lease = self._lease(spend.key)
                lease.booking -= spend.amount
                if committed:
                    lease.granted = max(lease.granted - spend.amount, ZERO)
                else:
                    lease.pending += spend.amount

    def log_hook(self, conn: Connection) -> Callable[[bool], None]:
        """For :class:`RequestLogWriter`: book pending spend in its batch transaction."""
        spends, alerts = self.book(conn)

        def finish(committed: bool) -> None:
            self.booked(spends, committed=committed)
            if committed:
                self.budgets.notify(alerts)

        return finish

    def held_usd(self) -> Decimal:
        """The worst cases held right now by calls in flight (summed over leases)."""
        with self._lock:
            return sum((lease.held for lease in self._leases.values()), ZERO)

    def pending(self) -> bool:
        with self._lock:
            return any(lease.pending > 0 for lease in self._leases.values())

    def book_now(self) -> None:
        """Book pending spend in a transaction of its own (blocking)."""
        spends: list[Spend] = []
        alerts: list[BudgetAlert] = []
        committed = False
        try:
            with self.budgets.leases.store.write() as conn:
                spends, alerts = self.book(conn)
            committed = True
        finally:
            self.booked(spends, committed=committed)
        self.budgets.notify(alerts)

    # -- upkeep --------------------------------------------------------------------------

    def upkeep(self, *, everything: bool = False) -> None:
        """Book pending spend, return idle headroom (all with ``everything``), renew the
        rest before it expires. Blocking: run it in a worker thread."""
        if self.pending():
            self.book_now()
        now_mono = time.monotonic()
        returns: list[Return] = []
        renew: list[str] = []
        with self._lock:
            for lease in self._leases.values():
                idle = now_mono - lease.last_used >= self.idle_s
                unused = lease.held <= 0 and lease.pending <= 0 and lease.booking <= 0
                if lease.lease_id and (everything or idle) and (lease.free > 0 or unused):
                    # Taken out of the lease first, so no call can hold it meanwhile. A
                    # lease nothing uses goes back whole, and its row with it.
                    whole = None if unused else lease.free
                    returns.append(Return(lease.key, lease.lease_id, whole))
                    lease.granted -= lease.free
                elif lease.lease_id and lease.valid_until - now_mono < self._ttl_s / 2:
                    renew.append(lease.lease_id)
            # Forget leases with nothing in them (a passed window, an idle cap).
            for key in [k for k, lease in self._leases.items() if _empty(lease)]:
                del self._leases[key]
        now = self.budgets.clock()
        if returns:
            self.budgets.leases.give_back(returns, now)
            with self._lock:
                for ret in returns:
                    emptied = self._leases.get(ret.key)
                    if emptied is not None and emptied.granted <= 0 and emptied.held <= 0:
                        emptied.lease_id = None  # deleted in the DB once empty
        if renew:
            gone = self.budgets.leases.renew(renew, now + self.ttl)
            valid_until = now_mono + self._ttl_s * 0.75
            with self._lock:
                for lease in self._leases.values():
                    if lease.lease_id in gone:
                        # Swept (this process stalled past the ttl): nothing is backed.
                        lease.lease_id, lease.granted = None, ZERO
                    elif lease.lease_id in renew:
                        lease.valid_until = valid_until

    def close(self) -> None:
        """Book everything and return every lease (blocking)."""
        self.upkeep(everything=True)

    # -- internals -----------------------------------------------------------------------

    @property
    def _ttl_s(self) -> float:
        return self.ttl.total_seconds()

    def _lease(self, key: LedgerKey) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(key)
        return lease

    def _take(self, keys: tuple[LedgerKey, ...], amount: Decimal) -> bool:
        """Hold ``amount`` on every lease of ``keys`` if each has it free and valid."""
        with self._lock:
            return self._hold_locked(keys, amount, time.monotonic())

    def _hold_locked(self, keys: tuple[LedgerKey, ...], amount: Decimal, now: float) -> bool:
        """:meth:`_take`, with ``self._lock`` already held."""
        leases = [self._lease(key) for key in keys]
        if not all(lease.free >= amount and lease.valid_until > now for lease in leases):
            return False
        for lease in leases:
            lease.held += amount
            lease.last_used = now
        return True

    def _grow(self, keys: tuple[LedgerKey, ...], amount: Decimal) -> bool:
        """Extend the leases of ``keys`` in the DB until each has ``amount`` free, and hold
        ``amount`` on them under the same lock (True); False if it was not free after all."""
        budgets = self.budgets
        swept = False
        for _ in range(_ATTEMPTS):
            now_mono = time.monotonic()
            with self._lock:
                wants = []
                for key in keys:
                    lease = self._lease(key)
                    valid = lease.valid_until > now_mono
                    need = max(amount - (lease.free if valid else ZERO), ZERO)
                    if need > 0 or not valid:
                        target = max(need, amount * self.calls_per_lease - max(lease.free, ZERO))
                        wants.append(Want(key, lease.lease_id, need, target))
                if not wants:
                    return self._hold_locked(keys, amount, now_mono)
            now = budgets.clock()
            outcome = budgets.leases.grant(
                wants,
                holder=self.holder,
                now=now,
                ttl=self.ttl,
                fraction=self.fraction,
                amount=amount,
            )
            if isinstance(outcome, list):
                valid_until = now_mono + self._ttl_s * 0.75
                with self._lock:
                    for granted in outcome:
                        lease = self._lease(granted.key)
                        if lease.lease_id != granted.lease_id:
                            # A new lease: none before, or the old one was swept (and
                            # its amount returned): only what was just granted backs it.
                            lease.granted = ZERO
                            lease.lease_id = granted.lease_id
                        lease.granted += granted.added
                        lease.ledger_id = granted.ledger_id
                        lease.valid_until = valid_until
                    return self._hold_locked(keys, amount, time.monotonic())
            if isinstance(outcome, BudgetExceeded):
                # Leases or holds of a crashed process may be what fills the cap.
                if swept or budgets.expire_stale() == 0:
                    raise outcome
                swept = True
                continue
            try:
                budgets.leases.store.ensure_ledger(outcome, now)
            except IntegrityError:
                budgets.invalidate_caps()  # a cap was deleted since the list was cached
                raise BudgetExceeded("a spend cap changed during admission; retry") from None
        raise DatabaseUnavailable("budget leases: could not extend after several attempts")


def _empty(lease: _Lease) -> bool:
    return (
        lease.lease_id is None
        and lease.held <= 0
        and lease.pending <= 0
        and lease.booking <= 0
        and lease.granted <= 0
    )
