"""SQL for leases of spend-cap headroom (``budget_leases``), on SQLite and Postgres.

A lease is a reservation that belongs to a gateway process rather than to one request:
its ``amount_usd`` is counted in the ledger row's ``reserved_usd``, so every statement
here changes the lease and the ledger row together, in one transaction, with the ledger
rows locked first (in cap order, as every other writer locks them) and the lease rows
after. Money is summed in Python with Decimal, never in SQL (it is TEXT on SQLite).

- :meth:`LeaseStore.grant` adds headroom to a process's leases, all caps or none, under
  the same check as a reservation: ``spent + reserved + need <= limit`` on hard caps.
- :meth:`LeaseStore.apply_spend` books settled spend: ``spent += s`` and the lease (and
  so ``reserved``) shrinks by as much, so ``spent + reserved`` does not move. It runs in
  the caller's transaction: the request log's group commit books the spend of the calls
  it logs in the same transaction as their rows.
- :meth:`LeaseStore.give_back` returns unused headroom; :meth:`LeaseStore.sweep` returns
  the leases of processes that stopped renewing them (crashed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update

from llmops.db.types import MONEY_SCALE
from llmops.errors import BudgetExceeded
from llmops.gateway.budget_ledger import (
    LEASES,
    ZERO,
    LedgerKey,
    LedgerRow,
    LedgerStore,
    exceeded,
    new_alerts,
)
from llmops.gateway.budget_types import BudgetAlert
from llmops.ids import new_id

_QUANT = Decimal(1).scaleb(-MONEY_SCALE)


@dataclass(frozen=True)
class Want:
    """Headroom a process asks for on one ledger row: at least ``need``, ideally
    ``target``, never more than ``fraction`` of what is left (unless ``need`` is more)."""

    key: LedgerKey
    lease_id: str | None
    need: Decimal
    target: Decimal


@dataclass(frozen=True)
class Granted:
    """What :meth:`LeaseStore.grant` added to one lease."""

    key: LedgerKey
    lease_id: str
    added: Decimal
    ledger_id: int


@dataclass(frozen=True)
class Spend:
    """Spend settled against a lease (``lease_id`` None: against no lease)."""

    key: LedgerKey
    lease_id: str | None
    amount: Decimal
    ledger_id: int | None = None  # known: the row is locked by id (a prepared statement)


@dataclass(frozen=True)
class Return:
    """Unused headroom of a lease to give back; ``amount`` None: all of it."""

    key: LedgerKey
    lease_id: str
    amount: Decimal | None


class LeaseStore:
    """Lease statements on the budget tables of one :class:`LedgerStore`."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._update_amount = (
            update(LEASES)
            .where(LEASES.c.id == bindparam("l_id"))
            .values(amount_usd=bindparam("l_amount"))
        )
        self._lock_leases = (
            select(LEASES.c.id, LEASES.c.amount_usd)
            .where(LEASES.c.id.in_(bindparam("ids", expanding=True)))
            .order_by(LEASES.c.id)
            .with_for_update()
        )

    def grant(
        self,
        wants: Sequence[Want],
        *,
        holder: str,
        now: datetime,
        ttl: timedelta,
        fraction: Decimal,
        amount: Decimal,
    ) -> list[Granted] | BudgetExceeded | set[LedgerKey]:
        """Grow (or open) a lease on every row of ``wants``; the refusal of the tightest
        hard cap (naming ``amount``, the request's worst case); or the ledger rows that
        do not exist yet (create them with :meth:`LedgerStore.ensure_ledger`, retry)."""
        keys = {want.key for want in wants}
        with self.store.write() as conn:
            ledger = {(e.cap_id, e.window_start): e for e in self.store.lock_ledger(conn, keys)}
            missing = keys - set(ledger)
            if missing:
                return missing
            over = [
                ledger[w.key]
                for w in wants
                if ledger[w.key].mode == "hard" and _headroom(ledger[w.key]) < w.need
            ]
            if over:
                return exceeded(over, amount)
            leases = self._lock(conn, [w.lease_id for w in wants if w.lease_id])
            granted: list[Granted] = []
            for want in wants:
                entry = ledger[want.key]
                # At the ledger's scale, rounded down: what is stored is what is granted.
                spare = (max(_headroom(entry), ZERO) * fraction).quantize(_QUANT, ROUND_FLOOR)
                added = max(want.need, min(want.target, spare))
                entry.reserved_usd += added
                lease = leases.get(want.lease_id or "")
                if lease is not None:
                    conn.execute(
                        update(LEASES)
                        .where(LEASES.c.id == lease["id"])
                        .values(amount_usd=lease["amount_usd"] + added, expires_at=now + ttl)
                    )
                    granted.append(Granted(want.key, lease["id"], added, entry.id))
                    continue
                lease_id = new_id("blease")
                conn.execute(
                    LEASES.insert().values(
                        id=lease_id,
                        cap_id=want.key[0],
                        window_start=want.key[1],
                        holder=holder[:200],
                        amount_usd=added,
                        created_at=now,
                        expires_at=now + ttl,
                    )
                )
                granted.append(Granted(want.key, lease_id, added, entry.id))
            self.store.save_ledger(conn, ledger.values(), now)
        return granted

    def apply_spend(
        self, conn: Connection, spends: Sequence[Spend], now: datetime
    ) -> list[BudgetAlert]:
        """Book ``spends`` in the caller's transaction; the alerts they raise."""
        if not spends:
            return []
        ids = [s.ledger_id for s in spends]
        rows = (
            self.store.lock_ledger_ids(conn, [i for i in ids if i is not None])
            if None not in ids
            else self.store.lock_ledger(conn, {s.key for s in spends})
        )
        ledger = {(e.cap_id, e.window_start): e for e in rows}
        leases = self._lock(conn, [s.lease_id for s in spends if s.lease_id])
        changed: dict[str, Decimal] = {}
        alerts: list[BudgetAlert] = []
        for spend in spends:
            entry = ledger.get(spend.key)
            if entry is None:  # the cap was deleted meanwhile: nothing to book against
                continue
            lease = leases.get(spend.lease_id or "")
            if lease is not None:
                left = changed.get(lease["id"], lease["amount_usd"])
                moved = min(spend.amount, left)
                changed[lease["id"]] = left - moved
                entry.reserved_usd = max(entry.reserved_usd - moved, ZERO)
            entry.spent_usd += spend.amount
        for entry in ledger.values():
            alerts.extend(new_alerts(entry))
        self.store.save_ledger(conn, ledger.values(), now)
        if changed:
            conn.execute(
                self._update_amount,
                [{"l_id": lease_id, "l_amount": amount} for lease_id, amount in changed.items()],
            )
        return alerts

    def give_back(self, returns: Sequence[Return], now: datetime) -> None:
        """Return unused headroom to the ledger; a lease left empty is deleted."""
        if not returns:
            return
        with self.store.write() as conn:
            ledger = {
                (e.cap_id, e.window_start): e
                for e in self.store.lock_ledger(conn, {r.key for r in returns})
            }
            leases = self._lock(conn, [r.lease_id for r in returns])
            for ret in returns:
                lease = leases.get(ret.lease_id)
                if lease is None:
                    continue  # swept already: its whole amount went back then
                whole = lease["amount_usd"]
                moved = whole if ret.amount is None else min(ret.amount, whole)
                lease["amount_usd"] -= moved
                entry = ledger.get(ret.key)
                if entry is not None:
                    entry.reserved_usd = max(entry.reserved_usd - moved, ZERO)
                if lease["amount_usd"] <= 0:
                    conn.execute(delete(LEASES).where(LEASES.c.id == lease["id"]))
                else:
                    conn.execute(
                        self._update_amount, {"l_id": lease["id"], "l_amount": lease["amount_usd"]}
                    )
            self.store.save_ledger(conn, ledger.values(), now)

    def renew(self, lease_ids: Sequence[str], expires_at: datetime) -> set[str]:
        """Push the expiry of ``lease_ids`` out; the ids that no longer exist."""
        if not lease_ids:
            return set()
        with self.store.write() as conn:
            found = set(
                conn.execute(
                    select(LEASES.c.id).where(LEASES.c.id.in_(list(lease_ids))).with_for_update()
                ).scalars()
            )
            if found:
                conn.execute(
                    update(LEASES).where(LEASES.c.id.in_(found)).values(expires_at=expires_at)
                )
        return set(lease_ids) - found

    def sweep(self, now: datetime, limit: int = 500) -> int:
        """Return the headroom of leases past their expiry (their process stopped)."""
        with self.store.read() as conn:
            stale = conn.execute(
                select(LEASES.c.id, LEASES.c.cap_id, LEASES.c.window_start)
                .where(LEASES.c.expires_at < now)
                .limit(limit)
            ).all()
        if not stale:
            return 0
        swept = 0
        with self.store.write() as conn:
            ledger = {
                (e.cap_id, e.window_start): e
                for e in self.store.lock_ledger(
                    conn, {(row.cap_id, row.window_start) for row in stale}
                )
            }
            rows = conn.execute(
                select(LEASES)
                .where(LEASES.c.id.in_([row.id for row in stale]), LEASES.c.expires_at < now)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                entry = ledger.get((row.cap_id, row.window_start))
                if entry is not None:
                    entry.reserved_usd = max(entry.reserved_usd - row.amount_usd, ZERO)
                swept += 1
            if rows:
                conn.execute(delete(LEASES).where(LEASES.c.id.in_([row.id for row in rows])))
            self.store.save_ledger(conn, ledger.values(), now)
        return swept

    def _lock(self, conn: Connection, lease_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not lease_ids:
            return {}
        rows = conn.execute(self._lock_leases, {"ids": sorted(set(lease_ids))})
        return {row.id: dict(row._mapping) for row in rows}


def _headroom(entry: LedgerRow) -> Decimal:
    return entry.limit_usd - entry.spent_usd - entry.reserved_usd
