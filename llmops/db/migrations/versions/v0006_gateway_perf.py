"""Gateway performance and housekeeping (issue 3): per-process leases of cap headroom.

``budget_leases`` holds the headroom of a spend cap's window that one gateway process
reserved to admit calls locally (its amount is part of ``budget_ledger.reserved_usd``).
Hand-written; mirrors :class:`llmops.db.models.BudgetLease`.

Revision ID: 0006
Revises: 0005
Created: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmops.db.types import Money, UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "budget_leases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("cap_id", sa.Integer(), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cap_id"], ["spend_caps.id"], name=op.f("fk_budget_leases_cap_id_spend_caps")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_leases")),
    )
    op.create_index(op.f("ix_budget_leases_cap_id"), "budget_leases", ["cap_id"])
    op.create_index(op.f("ix_budget_leases_expires_at"), "budget_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_leases_expires_at"), table_name="budget_leases")
    op.drop_index(op.f("ix_budget_leases_cap_id"), table_name="budget_leases")
    op.drop_table("budget_leases")
