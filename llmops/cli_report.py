"""``llmops report``: build the static HTML cost dashboard from the DuckDB warehouse.

Registered by ``llmops/cli.py``; DuckDB, Plotly and Jinja load inside the command so
``llmops --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["report_app"]

report_app = typer.Typer(
    help="Reports over the DuckDB warehouse (queries in reports/queries/*.sql).",
    no_args_is_help=True,
)


@report_app.command("build")
def build(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for index.html. Default: <data dir>/reports."),
    ] = None,
    warehouse: Annotated[
        Path | None,
        typer.Option(help="DuckDB file to read. Default: LLMOPS_WAREHOUSE_PATH."),
    ] = None,
) -> None:
    """Write the cost dashboard (one self-contained HTML page that opens offline)."""
    from llmops.reports.build import build_dashboard
    from llmops.settings import get_settings

    settings = get_settings()
    source = (warehouse or settings.resolved_warehouse_path).resolve()
    dashboard = build_dashboard(
        source,
        settings.reports_dir,
        (out or settings.data_dir / "reports").resolve(),
    )
    if not dashboard.warehouse_found:
        typer.echo(f"no warehouse at {source}: every panel says no data")
    for panel in dashboard.panels:
        detail = f": {panel.note.removeprefix('No data: ')}" if panel.note else ""
        typer.echo(f"  {panel.state:<8} {panel.title}{detail}")
    charts = sum(1 for p in dashboard.panels if p.state == "chart")
    typer.echo(f"dashboard: {dashboard.path} ({charts} of {len(dashboard.panels)} panels drawn)")
    if dashboard.errors:
        names = ", ".join(p.name for p in dashboard.errors)
        typer.secho(f"error: {len(dashboard.errors)} panel(s) failed: {names}", fg="red", err=True)
        raise typer.Exit(code=1)
