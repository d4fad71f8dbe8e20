"""Prompt store and evals (issue 5): label audit, eval runs and results, output cache.

Reserved slot in the migration chain so that work on several issues can proceed in
parallel; it is empty until that work adds its schema changes.

Revision ID: 0004
Revises: 0003
Created: 2026-11-28
"""

from __future__ import annotations

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
