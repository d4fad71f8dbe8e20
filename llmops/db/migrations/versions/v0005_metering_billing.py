"""Metering and billing (issue 6): rollups, meter usage, actions, sync ledger, reconciliation.

- ``usage_rollups``: token counts become BIGINT (a day of a busy tenant overflows 2^31);
  ``billable_units`` goes: a plan bills per meter, so billable quantities live in the new
  ``meter_usage`` table (tenant, meter, hour), not on a feature/model row.
- ``stripe_sync_ledger``: ``value`` becomes an integer (Stripe meter values are integers
  in the meter's unit); ``event_name``, ``seq`` (0 for the first send of a window, then
  deltas) and ``error`` are added, with one row per (tenant, meter, hour, seq).
- New: ``meter_usage``, ``action_outcomes``, ``metering_watermarks``, ``metering_rejects``,
  ``reconciliation_drifts``.

SQLite alters go through ``batch_alter_table`` (copy and swap).

Revision ID: 0005
Revises: 0004
Created: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmops.db.types import Money, UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_BIGSERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TOKENS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


def upgrade() -> None:
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("billable_units")
        for name in _TOKENS:
            batch.alter_column(
                name, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
            )

    with op.batch_alter_table("stripe_sync_ledger") as batch:
        batch.alter_column(
            "value",
            existing_type=Money(),
            type_=sa.BigInteger(),
            existing_nullable=False,
            postgresql_using="value::bigint",
        )
        batch.add_column(
            sa.Column("event_name", sa.String(length=100), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.create_unique_constraint(
            "uq_stripe_sync_seq", ["tenant_id", "meter", "window_start", "seq"]
        )
    # The defaults only filled existing rows; the models set every value explicitly.
    with op.batch_alter_table("stripe_sync_ledger") as batch:
        batch.alter_column("event_name", server_default=None, existing_type=sa.String(100))
        batch.alter_column("seq", server_default=None, existing_type=sa.Integer())

    op.create_table(
        "meter_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("meter", sa.String(length=100), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_usage")),
        sa.UniqueConstraint("tenant_id", "meter", "window_start", name="uq_meter_usage_key"),
    )
    op.create_index(op.f("ix_meter_usage_window_start"), "meter_usage", ["window_start"])

    op.create_table(
        "action_outcomes",
        sa.Column("id", _BIGSERIAL, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("action_id", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_outcomes")),
        sa.UniqueConstraint("tenant_id", "action_id", name="uq_action_outcomes_action"),
    )
    op.create_index(op.f("ix_action_outcomes_tenant_id"), "action_outcomes", ["tenant_id"])
    op.create_index(op.f("ix_action_outcomes_recorded_at"), "action_outcomes", ["recorded_at"])

    op.create_table(
        "metering_watermarks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_metering_watermarks")),
    )

    op.create_table(
        "metering_rejects",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_metering_rejects")),
    )

    op.create_table(
        "reconciliation_drifts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("meter", sa.String(length=100), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("metered", sa.BigInteger(), nullable=False),
        sa.Column("ledger_sent", sa.BigInteger(), nullable=False),
        sa.Column("stripe", sa.BigInteger(), nullable=False),
        sa.Column("flagged", sa.BigInteger(), nullable=False),
        sa.Column("drift", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_drifts")),
    )
    op.create_index(op.f("ix_reconciliation_drifts_run_id"), "reconciliation_drifts", ["run_id"])


def downgrade() -> None:
    op.drop_table("reconciliation_drifts")
    op.drop_table("metering_rejects")
    op.drop_table("metering_watermarks")
    op.drop_table("action_outcomes")
    op.drop_table("meter_usage")
    with op.batch_alter_table("stripe_sync_ledger") as batch:
        batch.drop_constraint("uq_stripe_sync_seq", type_="unique")
        batch.drop_column("error")
        batch.drop_column("seq")
        batch.drop_column("event_name")
        batch.alter_column(
            "value", existing_type=sa.BigInteger(), type_=Money(), existing_nullable=False
        )
    with op.batch_alter_table("usage_rollups") as batch:
        for name in _TOKENS:
            batch.alter_column(
                name, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
            )
        batch.add_column(sa.Column("billable_units", Money(), nullable=False, server_default="0"))
    with op.batch_alter_table("usage_rollups") as batch:
        batch.alter_column("billable_units", server_default=None, existing_type=Money())
