"""``llmops caps``: set, list and delete spend caps in the ops DB.

Registered by ``llmops/cli.py``; the budget code and SQLAlchemy load inside the commands,
so ``llmops --help`` stays fast. Bad input is one line on stderr and exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, cast

import typer

from llmops.errors import LLMOpsError

if TYPE_CHECKING:
    from llmops.gateway.budget import BudgetManager, CapStatus

__all__ = ["caps_app", "format_caps"]

caps_app = typer.Typer(
    help="Spend caps per tenant, feature or (tenant, feature), over a UTC day, month or "
    "all time: hard caps reject calls before they run, soft caps alert at 80% and 100%.",
    no_args_is_help=True,
)

_Tenant = Annotated[str | None, typer.Option("--tenant", help="Tenant id.")]
_Feature = Annotated[str | None, typer.Option("--feature", help="Feature id.")]
_Period = Annotated[str | None, typer.Option("--period", help="day, month or total.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@contextmanager
def _manager() -> Iterator[BudgetManager]:
    """A budget manager on the configured ops DB, which must have been initialized."""
    from sqlalchemy import inspect

    from llmops.db.engine import check_connection, describe_url, engine_from_settings
    from llmops.gateway.budget import BudgetManager

    engine = engine_from_settings()
    try:
        check_connection(engine)
        if not inspect(engine).has_table("spend_caps"):
            raise _fail(f"no ops database at {describe_url(engine.url)}: run `llmops init` first")
        yield BudgetManager(engine)
    finally:
        engine.dispose()


@caps_app.command("set")
def set_cap(
    tenant: _Tenant = None,
    feature: _Feature = None,
    limit_usd: Annotated[
        str | None, typer.Option("--limit-usd", help="Limit in USD, e.g. 10 or 2.50.")
    ] = None,
    period: _Period = None,
    mode: Annotated[
        str, typer.Option("--mode", help="hard (reject over the limit) or soft (alert only).")
    ] = "hard",
) -> None:
    """Create a cap, or change the limit and mode of the cap on the same scope and period."""
    from llmops.gateway.budget import CapSpec, format_usd

    try:
        if limit_usd is None or period is None:
            missing = "--limit-usd" if limit_usd is None else "--period"
            raise _fail(f"{missing} is required")
        # Checked before the DB is opened, so bad input never waits on a connection.
        spec = CapSpec.parse(tenant, feature, limit_usd, period, mode)
        with _manager() as manager:
            cap = manager.set_cap(
                tenant_id=tenant,
                feature_id=feature,
                limit_usd=spec.limit_usd,
                period=spec.period,
                mode=spec.mode,
            )
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"cap set: {cap.scope_key} {cap.period} {cap.mode} {format_usd(cap.limit_usd)}")


@caps_app.command("list")
def list_caps() -> None:
    """Every cap with its current window: limit, spent, reserved, remaining, % used."""
    try:
        with _manager() as manager:
            caps = manager.list_caps()
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    if not caps:
        typer.echo("no spend caps (add one with `llmops caps set`)")
        return
    typer.echo(format_caps(caps))


@caps_app.command("delete")
def delete_cap(tenant: _Tenant = None, feature: _Feature = None, period: _Period = None) -> None:
    """Remove a cap and its ledger."""
    from llmops.gateway.budget import PERIODS, Period, scope_key

    try:
        key = scope_key(tenant, feature)
        if period not in PERIODS:
            raise _fail(f"--period must be one of {', '.join(PERIODS)}")
        checked = cast("Period", period)
        with _manager() as manager:
            deleted = manager.delete_cap(tenant_id=tenant, feature_id=feature, period=checked)
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    if not deleted:
        raise _fail(f"no {period} cap on {key}")
    typer.echo(f"cap deleted: {key} {period}")


def format_caps(caps: list[CapStatus]) -> str:
    """A plain-text table of caps, money right-aligned."""
    from llmops.gateway.budget import format_usd

    header = ("scope", "period", "mode", "limit", "spent", "reserved", "remaining", "% used")
    rows = [
        (
            cap.scope_key,
            cap.period,
            cap.mode,
            format_usd(cap.limit_usd),
            format_usd(cap.spent_usd),
            format_usd(cap.reserved_usd),
            format_usd(cap.remaining_usd),
            f"{cap.used_pct:.1f}%",
        )
        for cap in caps
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
