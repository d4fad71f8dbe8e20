"""``llmops blocks register``: save provider keys, the Stripe key, the ops DB URL and the
alert webhook as Prefect blocks, from the environment, idempotently.

The block code lives in the top-level ``blocks/`` package (it imports Prefect); it loads
inside the command so ``llmops --help`` stays fast.
"""

from __future__ import annotations

import typer

__all__ = ["blocks_app"]

blocks_app = typer.Typer(
    help="Prefect blocks for secrets and connections (saved from the environment).",
    no_args_is_help=True,
)


@blocks_app.command("register")
def register() -> None:
    """Save a block for every secret set in the environment; safe to run again."""
    from llmops.settings import apply_offline_defaults, get_settings

    apply_offline_defaults(get_settings())
    from blocks.register import SECRET_VARS, register_blocks

    done = register_blocks()
    if not done:
        typer.echo(
            "nothing to register: set any of "
            + ", ".join((*SECRET_VARS, "LLMOPS_DATABASE_URL", "LLMOPS_ALERT_WEBHOOK_URL"))
        )
        return
    for item in done:
        typer.echo(f"{item.action:9} {item.block}")
