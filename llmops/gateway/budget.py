"""Spend caps that hold under concurrency and across processes: reserve, then settle.

A cap limits the spend of a tenant, a feature, or one feature of one tenant, over a UTC
day, a UTC month or all time ("total"). Before a call the gateway reserves the call's
worst case on every cap that applies; after it, it settles the actual cost (or releases
the hold if the call failed). A reservation left by a crashed process expires after a
TTL and :meth:`BudgetManager.expire_stale` releases it.

- hard caps reject a reservation when ``spent + reserved + amount > limit`` on any of
  them: all applicable caps are reserved in one transaction, or none is.
- soft caps never reject. Hard and soft caps alike raise a :class:`BudgetAlert` when
  their *settled* spend reaches 80% and 100% of the limit, each once per window.
  Settled spend, not spend plus reservations: holds are worst cases, often released,
  and an alert that fires for money never spent cannot be taken back.
- a reservation settles against the windows it reserved in (derived from its
  ``created_at``; a cap's period never changes), even when settled in the next one.
- settling an expired reservation still records the spend: the money was spent.
- the ledger only counts calls reserved while a cap existed: a new cap starts at zero.

The ops DB is the arbiter; ``budget_ledger`` explains the locking on each backend. The
cap list is cached per manager for ``cap_cache_ttl`` seconds, so a request with no cap
costs no query at all; a cap added by another process applies within that time (at
once in this one: :meth:`set_cap` and :meth:`delete_cap` invalidate the cache). Limits
and modes are always read from the DB inside the reserving transaction.

Call these methods from worker threads (``asyncio.to_thread``): they block on the DB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.exc import IntegrityError

from llmops.db.models import SpendCap
from llmops.errors import BudgetExceeded, DatabaseUnavailable, ValidationError
from llmops.gateway.budget_cache import CapCache, CapRef
from llmops.gateway.budget_lease_store import LeaseStore
from llmops.gateway.budget_ledger import (
    RESERVATIONS,
    ZERO,
    LedgerKey,
    LedgerRow,
    LedgerStore,
    exceeded,
    new_alerts,
    reaches,
)
from llmops.gateway.budget_types import (
    ALERT_THRESHOLDS,
    EPOCH,
    MODES,
    PERIODS,
    BudgetAlert,
    CapScope,
    CapSpec,
    CapStatus,
    Mode,
    Period,
    Reservation,
    check_id,
    format_usd,
    parse_money,
    scope_key,
    window_start,
    worst_case_cost,
)
from llmops.ids import new_id, utcnow

__all__ = [
    "ALERT_THRESHOLDS",
    "EPOCH",
    "MODES",
    "PERIODS",
    "BudgetAlert",
    "BudgetManager",
    "CapScope",
    "CapSpec",
    "CapStatus",
    "Mode",
    "Period",
    "Reservation",
    "format_usd",
    "scope_key",
    "window_start",
    "worst_case_cost",
]

logger = logging.getLogger(__name__)

_MAX_REQUEST_ID = 40
_EXPIRE_BATCH = 500
#: Reserve retries: creating a window's ledger rows, a cap deleted under us, one sweep.
_ATTEMPTS = 4


class BudgetManager:
    """Spend caps, reservations and the ledger on one ops DB engine (thread-safe)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        reservation_ttl: timedelta = timedelta(minutes=15),
        cap_cache_ttl: float = 1.0,
        on_alert: Callable[[BudgetAlert], None] | None = None,
    ) -> None:
        if reservation_ttl <= timedelta(0):
            raise ValidationError("reservation_ttl must be positive")
        self._store = LedgerStore(engine)
        self._clock = clock
        self._reservation_ttl = reservation_ttl
        self._caps = CapCache(self._store.all_caps, cap_cache_ttl)
        #: Per-process leases of cap headroom (:mod:`llmops.gateway.budget_leases`).
        self.leases = LeaseStore(self._store)
        #: Called once for each alert, after the spend that raised it is committed. The
        #: default logs a warning; recording and delivering alerts is the caller's hook.
        self.on_alert: Callable[[BudgetAlert], None] = on_alert or log_alert

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._clock

    @property
    def engine(self) -> Engine:
        return self._store.engine

    def applicable_caps(self, tenant_id: str, feature_id: str) -> list[CapRef]:
        """Ids and periods of the caps on this tenant, feature and pair (cached list)."""
        return self._caps.applicable(tenant_id, feature_id)

    def caps_cached(self) -> bool:
        """True when :meth:`applicable_caps` will answer without a query."""
        return self._caps.is_fresh()

    def notify(self, alerts: Iterable[BudgetAlert]) -> None:
        """Hand committed alerts to :attr:`on_alert`; a failing hook is logged, not raised."""
        for alert in alerts:
            try:
                self.on_alert(alert)
            except Exception:
                logger.exception("budget alert hook failed for %s", alert.scope_key)

    # -- caps ----------------------------------------------------------------------------

    def set_cap(
        self,
        *,
        tenant_id: str | None,
        feature_id: str | None,
        limit_usd: Decimal,
        period: Period,
        mode: Mode = "hard",
    ) -> SpendCap:
        """Create the cap on this scope and period, or change its limit and mode."""
        spec = CapSpec.parse(tenant_id, feature_id, limit_usd, period, mode)
        now = self._clock()
        with self._store.write() as conn:
            row = self._store.upsert_cap(conn, spec, now)
            # A raised limit re-arms the thresholds the current spend no longer reaches.
            ledger = self._store.lock_ledger(conn, [(row["id"], window_start(period, now))])
            for entry in ledger:
                reached = [t for t in ALERT_THRESHOLDS if reaches(entry, t)]
                entry.alerted_pct = min(entry.alerted_pct, max(reached, default=0))
            self._store.save_ledger(conn, ledger, now)
        self.invalidate_caps()
        return SpendCap(**row)

    def delete_cap(
        self, *, tenant_id: str | None = None, feature_id: str | None = None, period: Period
    ) -> bool:
        """Remove a cap and its ledger; False if there was none. Open holds on it lapse."""
        deleted = self._store.delete_cap(scope_key(tenant_id, feature_id), period)
        self.invalidate_caps()
        return deleted

    def list_caps(self) -> list[CapStatus]:
        """Every cap with its current window's spent, reserved and remaining amounts."""
        now = self._clock()
        starts = {period: window_start(period, now) for period in PERIODS}
        return [
            CapStatus(
                id=row["id"],
                scope_key=row["scope_key"],
                tenant_id=row["tenant_id"],
                feature_id=row["feature_id"],
                period=row["period"],
                mode=row["mode"],
                limit_usd=row["limit_usd"],
                window_start=starts[row["period"]],
                spent_usd=row["spent_usd"] if row["spent_usd"] is not None else ZERO,
                reserved_usd=row["reserved_usd"] if row["reserved_usd"] is not None else ZERO,
            )
            for row in self._store.caps_in_windows(starts)
        ]

    def soft_cap_used_pct(self, tenant_id: str, feature_id: str) -> Decimal:
        """The highest share (in %) of a soft cap already spent among the caps that apply
        to this request; 0, with no query, when no cap applies."""
        caps = {cap.id for cap in self._caps.applicable(tenant_id, feature_id)}
        if not caps:
            return ZERO
        return max(
            (c.used_pct for c in self.list_caps() if c.id in caps and c.mode == "soft"),
            default=ZERO,
        )

    def invalidate_caps(self) -> None:
        """Forget the cached cap list; the next request reads it again."""
        self._caps.invalidate()

    # -- reservations --------------------------------------------------------------------

    def reserve(
        self, *, request_id: str, tenant_id: str, feature_id: str, amount_usd: Decimal
    ) -> Reservation:
        """Hold ``amount_usd`` on every cap that applies, or raise :class:`BudgetExceeded`.

        With no cap on the request, or a zero amount (a free model), nothing is held or
        written and the reservation has no ``cap_ids``.
        """
        amount = parse_money(amount_usd, "amount_usd", round_up=True)
        if not request_id or len(request_id) > _MAX_REQUEST_ID:
            raise ValidationError(f"request_id must be 1-{_MAX_REQUEST_ID} characters")
        check_id("tenant", tenant_id)
        check_id("feature", feature_id)
        reservation_id = new_id("bres")
        swept = False
        for _ in range(_ATTEMPTS):
            caps = self._caps.applicable(tenant_id, feature_id)
            if not caps or amount == 0:
                # Nothing to hold: no write, and settle/release of it are no-ops.
                return Reservation(reservation_id, request_id, amount, ())
            now = self._clock()
            keys = {(cap.id, window_start(cap.period, now)) for cap in caps}
            outcome = self._try_reserve(reservation_id, request_id, amount, keys, now)
            if isinstance(outcome, Reservation):
                return outcome
            if isinstance(outcome, BudgetExceeded):
                # Holds of a crashed process may be what fills the cap: sweep once.
                if swept or self.expire_stale() == 0:
                    raise outcome
                swept = True
                continue
            try:
                self._store.ensure_ledger(outcome, now)
            except IntegrityError:
                self.invalidate_caps()  # a cap was deleted since the list was cached
        raise DatabaseUnavailable("budget ledger: could not reserve after several attempts")

    def settle(
        self, reservation: Reservation | str, actual_usd: Decimal
    ) -> tuple[BudgetAlert, ...]:
        """Turn a hold into spend at the actual cost; a no-op if already settled or
        released. Returns the alerts this spend raised."""
        actual = parse_money(actual_usd, "actual_usd")
        reservation_id = _reservation_id(reservation)
        if reservation_id is None:
            return ()
        now = self._clock()
        alerts: list[BudgetAlert] = []
        with self._store.write() as conn:
            row = self._store.lock_reservation(conn, reservation_id)
            if row is None or row["status"] not in ("held", "expired"):
                return ()
            held = row["status"] == "held"
            ledger = self._lock_reserved(conn, [row])
            for entry in ledger:
                if held:
                    entry.reserved_usd = max(entry.reserved_usd - row["amount_usd"], ZERO)
                entry.spent_usd += actual
                alerts.extend(new_alerts(entry))
            self._store.save_ledger(conn, ledger, now)
            self._store.set_reservation_status(conn, [reservation_id], "settled", actual)
        self.notify(alerts)
        return tuple(alerts)

    def release(self, reservation: Reservation | str) -> None:
        """Give a hold back (the call failed); a no-op unless it is still held."""
        reservation_id = _reservation_id(reservation)
        if reservation_id is None:
            return
        now = self._clock()
        with self._store.write() as conn:
            row = self._store.lock_reservation(conn, reservation_id)
            if row is None or row["status"] != "held":
                return
            ledger = self._lock_reserved(conn, [row])
            for entry in ledger:
                entry.reserved_usd = max(entry.reserved_usd - row["amount_usd"], ZERO)
            self._store.save_ledger(conn, ledger, now)
            self._store.set_reservation_status(conn, [reservation_id], "released")

    def expire_stale(self) -> int:
        """Release holds and leases past their ``expires_at`` (holds get status
        ``expired``, leases are deleted); how many."""
        now = self._clock()
        total = 0
        while (swept := self.leases.sweep(now, _EXPIRE_BATCH)) > 0:
            total += swept
            if swept < _EXPIRE_BATCH:
                break
        while self._store.any_stale(now):
            with self._store.write() as conn:
                rows = self._store.lock_stale(conn, now, _EXPIRE_BATCH)
                ledger = self._lock_reserved(conn, rows)
                by_key = {(entry.cap_id, entry.window_start): entry for entry in ledger}
                for row in rows:
                    for key in self._reserved_keys(conn, row):
                        if key in by_key:
                            entry = by_key[key]
                            entry.reserved_usd = max(entry.reserved_usd - row["amount_usd"], ZERO)
                self._store.save_ledger(conn, ledger, now)
                if rows:
                    ids = [row["id"] for row in rows]
                    self._store.set_reservation_status(conn, ids, "expired")
            total += len(rows)
            if len(rows) < _EXPIRE_BATCH:
                break
        if total:
            logger.warning("released %d expired budget reservation(s) and lease(s)", total)
        return total

    def prune(self, older_than: timedelta) -> int:
        """Delete settled, released and expired reservations whose hold ended more than
        ``older_than`` ago (the request log keeps what each call cost); how many."""
        cutoff = self._clock() - older_than
        total = 0
        while True:
            with self._store.write() as conn:
                ids = list(
                    conn.execute(
                        select(RESERVATIONS.c.id)
                        .where(RESERVATIONS.c.expires_at < cutoff, RESERVATIONS.c.status != "held")
                        .limit(_EXPIRE_BATCH)
                    ).scalars()
                )
                if ids:
                    conn.execute(delete(RESERVATIONS).where(RESERVATIONS.c.id.in_(ids)))
            total += len(ids)
            if len(ids) < _EXPIRE_BATCH:
                return total

    # -- internals -----------------------------------------------------------------------

    def _try_reserve(
        self,
        reservation_id: str,
        request_id: str,
        amount: Decimal,
        keys: set[LedgerKey],
        now: datetime,
    ) -> Reservation | BudgetExceeded | set[LedgerKey]:
        """One attempt: the reservation, the refusal, or the ledger rows still missing."""
        with self._store.write() as conn:
            ledger = self._store.lock_ledger(conn, keys)
            missing = keys - {(entry.cap_id, entry.window_start) for entry in ledger}
            if missing:
                return missing
            over = [
                entry
                for entry in ledger
                if entry.mode == "hard"
                and entry.spent_usd + entry.reserved_usd + amount > entry.limit_usd
            ]
            if over:
                return exceeded(over, amount)
            for entry in ledger:
                entry.reserved_usd += amount
            self._store.save_ledger(conn, ledger, now)
            cap_ids = tuple(sorted(entry.cap_id for entry in ledger))
            conn.execute(
                RESERVATIONS.insert().values(
                    id=reservation_id,
                    request_id=request_id,
                    cap_ids=list(cap_ids),
                    amount_usd=amount,
                    status="held",
                    created_at=now,
                    expires_at=now + self._reservation_ttl,
                )
            )
        return Reservation(reservation_id, request_id, amount, cap_ids)

    def _reserved_keys(self, conn: Connection, row: dict[str, Any]) -> list[LedgerKey]:
        """The ledger rows a reservation holds: its caps' windows at its creation."""
        cap_ids = [int(cap_id) for cap_id in row["cap_ids"] or ()]
        known = self._caps.known_periods()  # a cap's period never changes
        periods = {cap_id: known[cap_id] for cap_id in cap_ids if cap_id in known}
        unknown = [cap_id for cap_id in cap_ids if cap_id not in periods]
        if unknown:
            # Read on this connection: asking the pool for another could wait forever.
            periods.update(self._store.cap_periods(conn, unknown))
        created_at: datetime = row["created_at"]
        return [(cap_id, window_start(period, created_at)) for cap_id, period in periods.items()]

    def _lock_reserved(self, conn: Connection, rows: list[dict[str, Any]]) -> list[LedgerRow]:
        keys = {key for row in rows for key in self._reserved_keys(conn, row)}
        return self._store.lock_ledger(conn, keys)


def log_alert(alert: BudgetAlert) -> None:
    """The default alert hook: one warning line."""
    logger.warning(
        "spend cap %s (%s, %s) at %d%%: %s spent of %s",
        alert.scope_key,
        alert.period,
        alert.mode,
        alert.threshold_pct,
        format_usd(alert.spent_usd),
        format_usd(alert.limit_usd),
    )


def _reservation_id(reservation: Reservation | str) -> str | None:
    """The id to look up, or None for a reservation that holds nothing."""
    if isinstance(reservation, Reservation):
        return reservation.id if reservation.cap_ids else None
    return reservation
