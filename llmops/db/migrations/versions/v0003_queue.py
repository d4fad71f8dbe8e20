"""Durable job queue (issue 4): job columns, attempts history, callbacks.

Reserved slot in the migration chain so that work on several issues can proceed in
parallel; it is empty until that work adds its schema changes.

Revision ID: 0003
Revises: 0002
Created: 2026-11-28
"""

from __future__ import annotations

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
