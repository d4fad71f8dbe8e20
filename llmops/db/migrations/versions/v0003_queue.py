"""Durable job queue (issue 4): claim/lease indexes, callback delivery, callback secrets.

Hand-written from autogenerate. ``jobs`` gains the action id, the request that answered
it, when it first started, and the state of its callback delivery; three indexes serve
the claim (ready jobs per tenant by priority and age), expired-lease recovery and the
callback sweep. ``tenant_callback_secrets`` holds one HMAC secret per tenant.

Revision ID: 0003
Revises: 0002
Created: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmops.db.types import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_callback_secrets",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_callback_secrets_tenant_id_tenants"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_callback_secrets")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("action_id", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("started_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("callback_status", sa.String(length=16), nullable=True))
        # Existing rows need a value; the model has no server default, so drop it after.
        batch.add_column(
            sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("callback_next_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("callback_http_status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("callback_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("callback_delivered_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_jobs_callback", ["callback_status", "callback_next_at"])
        batch.create_index("ix_jobs_lease", ["status", "lease_expires_at"])
        batch.create_index("ix_jobs_ready", ["status", "tenant_id", "priority", "created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("callback_attempts", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_ready")
        batch.drop_index("ix_jobs_lease")
        batch.drop_index("ix_jobs_callback")
        for column in (
            "callback_delivered_at",
            "callback_error",
            "callback_http_status",
            "callback_next_at",
            "callback_attempts",
            "callback_status",
            "started_at",
            "request_id",
            "action_id",
        ):
            batch.drop_column(column)
    op.drop_table("tenant_callback_secrets")
