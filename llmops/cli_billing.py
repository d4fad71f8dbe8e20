"""``llmops billing`` (rollup, setup, sync, reconcile, actions) and ``llmops stripe-sim``.

Registered by ``llmops/cli.py``. DuckDB, GX and the Stripe SDK load inside the commands,
so ``llmops --help`` stays fast. Exit codes: 0 ok, 1 an error (one line on stderr),
2 partial (some events refused or usage not billable; each one listed), 3 drift found.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from llmops.metering.plans import BillingConfig

__all__ = ["billing_app", "stripe_sim_app"]

billing_app = typer.Typer(
    help="Usage rollups, Stripe meter setup, sync and reconciliation (config/billing.yaml).",
    no_args_is_help=True,
)
stripe_sim_app = typer.Typer(help="A local stand-in for Stripe Billing Meters (tests, demo).")

_MICRO = Decimal("0.000001")
_Json = Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")]


def _context() -> tuple[Engine, BillingConfig]:
    from sqlalchemy import inspect

    from llmops.db.engine import check_connection, describe_url, engine_from_settings
    from llmops.metering.plans import load_billing_config
    from llmops.settings import apply_offline_env, get_settings

    apply_offline_env()
    settings = get_settings()
    billing = load_billing_config(settings.billing_config)
    engine = engine_from_settings(settings)
    check_connection(engine)
    if not inspect(engine).has_table("meter_usage"):
        typer.secho(
            f"error: no ops database at {describe_url(engine.url)}: run `llmops init` first",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
    return engine, billing


def _client() -> Any:
    from llmops.billing.client import make_client
    from llmops.settings import get_settings

    return make_client(get_settings())


def _lines(title: str, items: list[str]) -> None:
    if items:
        typer.echo(f"{title} ({len(items)}):", err=True)
        for item in items:
            typer.echo(f"  - {item}", err=True)


@billing_app.command("rollup")
def rollup(
    settle_minutes: Annotated[int, typer.Option(min=0, help="Settle window for late rows.")] = 5,
    as_json: _Json = False,
) -> None:
    """Load new request-log rows and recompute the rollups and meter usage they touch."""
    from llmops.metering.quality import DataQualityError
    from llmops.metering.rollup import run_rollup
    from llmops.settings import get_settings

    engine, billing = _context()
    try:
        stats = run_rollup(
            engine,
            get_settings().resolved_warehouse_path,
            billing,
            settle=timedelta(minutes=settle_minutes),
        )
    except DataQualityError as exc:
        typer.echo(exc.result.markdown(), err=True)
        raise
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(stats.to_dict(), default=str))
    else:
        typer.echo(
            f"rollup: {stats.hours} hours and {stats.days} days recomputed "
            f"({stats.hourly_rows} hourly, {stats.daily_rows} daily rows), "
            f"{stats.meter_usage_rows} meter-usage rows, gate "
            f"{'passed' if stats.gate is None or stats.gate.success else 'failed'}"
        )
    _lines(
        "rejected request-log rows", [f"{r['request_id']}: {r['reason']}" for r in stats.rejects]
    )
    _lines("problems", stats.problems)
    if stats.rejected_rows or stats.problems:
        raise typer.Exit(2)


@billing_app.command("setup")
def setup() -> None:
    """Create or verify the Stripe meters and the tenants' customers (safe to rerun)."""
    from llmops.billing.setup import run_setup

    engine, billing = _context()
    try:
        report = run_setup(engine, billing, _client())
    finally:
        engine.dispose()
    for key, (mid, action) in report.meters.items():
        typer.echo(f"meter {key}: {mid} ({action})")
    for tenant, (cid, action) in report.customers.items():
        typer.echo(f"customer of {tenant}: {cid} ({action})")
    _lines("problems", report.problems)
    if report.problems:
        raise typer.Exit(2)


@billing_app.command("sync")
def sync(
    settle_minutes: Annotated[int, typer.Option(min=0, help="Hours close this long after.")] = 5,
    rollup_first: Annotated[
        bool, typer.Option("--rollup/--no-rollup", help="Roll up new request-log rows first.")
    ] = True,
    as_json: _Json = False,
) -> None:
    """Send unsent usage of closed hours to Stripe as meter events (safe to rerun).

    By default new request-log rows are rolled up first, so late usage goes out as a delta.
    """
    from llmops.billing.sync import run_sync
    from llmops.metering.quality import DataQualityError
    from llmops.metering.rollup import run_rollup
    from llmops.settings import get_settings

    engine, billing = _context()
    settle = timedelta(minutes=settle_minutes)
    try:
        if rollup_first:
            stats = run_rollup(
                engine, get_settings().resolved_warehouse_path, billing, settle=settle
            )
            typer.echo(
                f"rollup: {stats.hours} hours recomputed, {stats.rejected_rows} request-log "
                "rows rejected (see `llmops billing rollup`)"
            )
        report = run_sync(engine, billing, _client(), settle=settle)
    except DataQualityError as exc:
        typer.echo(exc.result.markdown(), err=True)
        raise
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), default=str))
    else:
        typer.echo(
            f"sync: {report.sent} events accepted by Stripe ({report.resent} resent), "
            f"{len(report.rejected)} refused, {len(report.flagged)} flagged, "
            f"{len(report.skipped)} skipped, {report.throttled} throttled answers, "
            f"{report.seconds:.1f}s"
        )
    _lines("refused by Stripe", report.rejected)
    _lines("not sent, Stripe unavailable", report.unavailable)
    _lines("flagged for an invoice adjustment", report.flagged)
    _lines("skipped", report.skipped)
    _lines("problems", report.problems)
    if not report.ok or report.skipped:
        raise typer.Exit(2)


@billing_app.command("reconcile")
def reconcile(
    days: Annotated[int, typer.Option(min=1, max=35, help="Closed hours of the last N days.")] = 2,
    settle_minutes: Annotated[int, typer.Option(min=0, help="The sync's settle window.")] = 5,
    as_json: _Json = False,
) -> None:
    """Compare Stripe's hourly summaries with the ledger and the meter usage."""
    from llmops.billing.reconcile import run_reconcile
    from llmops.ids import utcnow

    engine, billing = _context()
    # Hours the sync has had a chance to send: closed, and past the sync's settle window.
    end = utcnow() - timedelta(minutes=settle_minutes)
    try:
        report = run_reconcile(
            engine, billing, _client(), start=end - timedelta(days=days), end=end
        )
    finally:
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "drifts": report.table(),
                    "totals": report.totals,
                    "problems": report.problems,
                }
            )
        )
    else:
        typer.echo(report.markdown())
    if report.drifts:
        raise typer.Exit(3)
    if report.problems:
        raise typer.Exit(2)


@billing_app.command("actions")
def actions(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """Cost per action and per successful action, failed attempts included."""
    from sqlmodel import Session

    from llmops.metering.actions import action_costs

    engine, _ = _context()
    try:
        with Session(engine) as session:
            rows = action_costs(session, tenant_id=tenant)
    finally:
        engine.dispose()
    typer.echo(
        "tenant\tfeature\tactions\tsuccess\tfailed\tpending\tcalls\tcost_usd\t"
        "per_action\tper_success"
    )
    for r in rows:
        typer.echo(
            f"{r.tenant_id}\t{r.feature_id}\t{r.actions}\t{r.successful}\t{r.failed}\t"
            f"{r.pending}\t{r.calls}\t{r.cost_usd.normalize()}\t"
            f"{r.cost_per_action and r.cost_per_action.quantize(_MICRO)}\t"
            f"{r.cost_per_successful_action and r.cost_per_successful_action.quantize(_MICRO)}"
        )


@stripe_sim_app.command("serve")
def stripe_sim_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 12111,
) -> None:
    """Serve the Stripe stand-in (point LLMOPS_STRIPE_API_BASE at it) until interrupted."""
    from llmops.stripe_sim import serve

    serve(host, port)
