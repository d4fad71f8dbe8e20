"""The ops DB: engine factory and sessions here; tables in ``models``; ``migrate`` for schema.

``llmops.db.migrate`` is not re-exported: it imports Alembic, which only migration
commands need.
"""

from llmops.db.engine import (
    check_connection,
    connect,
    describe_url,
    engine_from_settings,
    make_engine,
    session_scope,
)

__all__ = [
    "check_connection",
    "connect",
    "describe_url",
    "engine_from_settings",
    "make_engine",
    "session_scope",
]
