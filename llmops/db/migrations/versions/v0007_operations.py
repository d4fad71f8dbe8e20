"""Operations (issue 7): alerts, retention.

Reserved slot in the migration chain so that work on several issues can proceed in
parallel; it is empty until that work adds its schema changes.

Revision ID: 0007
Revises: 0006
Created: 2026-11-28
"""

from __future__ import annotations

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
