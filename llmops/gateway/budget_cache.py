"""The cap list, cached per manager so that a request with no cap costs no query."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CapRef:
    """What a request needs to know about a cap before it locks the ledger."""

    id: int
    period: str


class _Index:
    def __init__(self, rows: Iterable[dict[str, Any]], expires_at: float) -> None:
        self.expires_at = expires_at
        self.by_scope: dict[tuple[str | None, str | None], list[CapRef]] = {}
        self.periods: dict[int, str] = {}
        for row in rows:
            ref = CapRef(int(row["id"]), str(row["period"]))
            self.by_scope.setdefault((row["tenant_id"], row["feature_id"]), []).append(ref)
            self.periods[ref.id] = ref.period


class CapCache:
    """Every cap by the scope it applies to, re-read after ``ttl`` seconds.

    Limits and modes are not cached: the reserving transaction reads them. A cap's id
    and period never change, so a stale entry can only miss a cap created since the
    last read, or name one deleted since (its ledger row is then missing, and skipped).
    """

    def __init__(self, load: Callable[[], list[dict[str, Any]]], ttl: float) -> None:
        self._load = load
        self._ttl = ttl
        self._index: _Index | None = None
        self._lock = threading.Lock()
        self._generation = 0

    def applicable(self, tenant_id: str, feature_id: str) -> list[CapRef]:
        """Caps on the tenant, on the (tenant, feature) pair and on the feature."""
        by_scope = self._current().by_scope
        return [
            *by_scope.get((tenant_id, None), ()),
            *by_scope.get((tenant_id, feature_id), ()),
            *by_scope.get((None, feature_id), ()),
        ]

    def is_fresh(self) -> bool:
        """True when :meth:`applicable` will answer without reading the DB."""
        index = self._index
        return index is not None and index.expires_at > time.monotonic()

    def known_periods(self) -> dict[int, str]:
        """Periods of the caps in the list as last read, without reading it again."""
        index = self._index
        return index.periods if index is not None else {}

    def invalidate(self) -> None:
        """Read the list again on next use (also discards a read already under way)."""
        self._generation += 1
        self._index = None

    def _current(self) -> _Index:
        index = self._index
        if index is not None:
            if index.expires_at > time.monotonic():
                return index
            # One thread re-reads an expired list; the others go on with it meanwhile.
            if not self._lock.acquire(blocking=False):
                return index
        else:
            self._lock.acquire()
        try:
            index = self._index
            if index is None or index.expires_at <= time.monotonic():
                generation = self._generation
                rows = self._load()
                # Invalidated while reading: use this list once, then read again.
                ttl = self._ttl if generation == self._generation else 0.0
                index = _Index(rows, time.monotonic() + ttl)
                self._index = index
            return index
        finally:
            self._lock.release()
