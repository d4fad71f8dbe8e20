"""Prompt store and evals (issue 5): label audit, eval runs and results, output cache.

Adds: ``prompt_label_events.forced`` (a promotion without a passing gate), the eval run
summary columns, per-item ``status``/``error`` on results (unscored items are kept, never
dropped), the eval output cache and the gate decisions that promotion checks.

Revision ID: 0004
Revises: 0003
Created: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmops.db.types import Money, UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("prompt_label_events") as batch:
        batch.add_column(
            sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("prompt_label_events") as batch:
        batch.alter_column("forced", server_default=None)

    with op.batch_alter_table("eval_runs") as batch:
        batch.alter_column("prompt_version", existing_type=sa.Integer(), nullable=True)
        batch.add_column(
            sa.Column("prompt_hash", sa.String(length=64), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("trials", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("items_total", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("items_unscored", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("provider_calls", sa.Integer(), nullable=False, server_default="0")
        )
        batch.create_index(op.f("ix_eval_runs_prompt_hash"), ["prompt_hash"])
    with op.batch_alter_table("eval_runs") as batch:
        for column in ("prompt_hash", "trials", "items_total", "items_unscored", "provider_calls"):
            batch.alter_column(column, server_default=None)

    with op.batch_alter_table("eval_results") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="scored")
        )
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("eval_results") as batch:
        batch.alter_column("status", server_default=None)

    op.create_table(
        "eval_output_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("prompt_hash", sa.String(length=64), nullable=False),
        sa.Column("item_hash", sa.String(length=64), nullable=False),
        sa.Column("model_group", sa.String(length=100), nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.Column("cost_usd", Money(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_eval_output_cache")),
    )

    op.create_table(
        "eval_gates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("suite", sa.String(length=100), nullable=False),
        sa.Column("prompt_name", sa.String(length=100), nullable=False),
        sa.Column("candidate_hash", sa.String(length=64), nullable=False),
        sa.Column("candidate_version", sa.Integer(), nullable=True),
        sa.Column("baseline_version", sa.Integer(), nullable=True),
        sa.Column("candidate_run_id", sa.String(length=40), nullable=False),
        sa.Column("baseline_run_id", sa.String(length=40), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_gates")),
    )
    op.create_index(op.f("ix_eval_gates_suite"), "eval_gates", ["suite"])
    op.create_index(op.f("ix_eval_gates_prompt_name"), "eval_gates", ["prompt_name"])
    op.create_index(op.f("ix_eval_gates_candidate_hash"), "eval_gates", ["candidate_hash"])


def downgrade() -> None:
    op.drop_table("eval_gates")
    op.drop_table("eval_output_cache")
    with op.batch_alter_table("eval_results") as batch:
        batch.drop_column("error")
        batch.drop_column("status")
    with op.batch_alter_table("eval_runs") as batch:
        batch.drop_index(op.f("ix_eval_runs_prompt_hash"))
        for column in ("provider_calls", "items_unscored", "items_total", "trials", "prompt_hash"):
            batch.drop_column(column)
    # Runs of unpushed files have no version; they cannot survive a NOT NULL column.
    op.execute(
        "DELETE FROM eval_results WHERE run_id IN "
        "(SELECT id FROM eval_runs WHERE prompt_version IS NULL)"
    )
    op.execute("DELETE FROM eval_runs WHERE prompt_version IS NULL")
    with op.batch_alter_table("eval_runs") as batch:
        batch.alter_column("prompt_version", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("prompt_label_events") as batch:
        batch.drop_column("forced")
