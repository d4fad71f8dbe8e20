"""Writing request_log rows: one committed row per gateway call."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert

from llmops.db.models import RequestLog


class RequestLogWriter:
    """Inserts request_log rows; each write is its own committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = insert(RequestLog)

    def write(self, row: dict[str, Any]) -> None:
        """Insert one row (column name -> value) and commit it."""
        with self.engine.begin() as conn:
            conn.execute(self._insert, row)
