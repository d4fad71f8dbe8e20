"""Writing request_log rows: one committed row per gateway call."""

from __future__ import annotations

from sqlalchemy import Engine, insert

from llmops.db.models import RequestLog


class RequestLogWriter:
    """Inserts request_log rows; each write is its own committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, row: RequestLog) -> None:
        values = row.model_dump(exclude={"id"})
        with self.engine.begin() as conn:
            conn.execute(insert(RequestLog).values(**values))
