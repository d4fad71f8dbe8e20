"""``llmops alerts list``: the alerts recorded in the ops DB, most recent first."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help="Alerts (soft caps, eval regressions, dead letters, Stripe drift, provider errors).",
    no_args_is_help=True,
)


@alerts_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1, help="How many to show.")] = 50,
) -> None:
    """Recorded alerts: kind, condition, count, last seen, delivery."""
    from llmops.alerts import list_alerts
    from llmops.db.engine import check_connection, make_engine
    from llmops.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url)
    try:
        check_connection(engine)
        alerts = list_alerts(engine, limit=limit)
    finally:
        engine.dispose()
    if not alerts:
        typer.echo("no alerts")
        return
    for a in alerts:
        delivery = (
            "delivered"
            if a.delivered_at
            else f"not delivered: {a.delivery_error}"
            if a.delivery_error
            else "pending"
        )
        typer.echo(
            f"{a.last_seen_at:%Y-%m-%d %H:%M}Z  {a.severity:8} {a.kind:16} x{a.occurrences:<4} "
            f"{a.summary}  [{delivery}]"
        )
