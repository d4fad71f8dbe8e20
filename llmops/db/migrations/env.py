"""Alembic environment: migrates the connection that llmops.db.migrate hands over."""

from __future__ import annotations

from alembic import context

from llmops.db.migrate import context_options

connection = context.config.attributes.get("connection")
if connection is None:
    # There is no alembic.ini and no offline (--sql) mode: the URL, locking and SQLite
    # pragmas all live in llmops.db.migrate.
    raise RuntimeError("run migrations through llmops.db.migrate (upgrade, downgrade)")

context.configure(connection=connection, **context_options())
with context.begin_transaction():
    context.run_migrations()
