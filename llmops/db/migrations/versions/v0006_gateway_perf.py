"""Gateway performance and housekeeping (issue 3).

Reserved slot in the migration chain so that work on several issues can proceed in
parallel; it is empty until that work adds its schema changes.

Revision ID: 0006
Revises: 0005
Created: 2026-11-28
"""

from __future__ import annotations

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
