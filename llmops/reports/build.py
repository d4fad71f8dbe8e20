"""Build the static HTML cost dashboard from the DuckDB warehouse.

One page, one file: ``<out>/index.html`` with Plotly's JavaScript inlined once, so it
opens offline from disk or any static host (no CDN). Each panel runs one query from
``reports/queries/`` and draws it with :mod:`llmops.reports.charts`; a panel whose tables
are not in the warehouse yet, or that has no rows, says so instead of failing the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import LLMOpsError
from llmops.ids import utcnow
from llmops.reports.charts import CHARTS, money
from llmops.reports.queries import QueryResult, Status, load_query, run_query_file

if TYPE_CHECKING:
    import duckdb

__all__ = ["Dashboard", "PanelView", "ReportError", "build_dashboard"]

TEMPLATE = "dashboard.html.j2"


class ReportError(LLMOpsError):
    """The warehouse cannot be read, or a report query failed."""


@dataclass(frozen=True)
class PanelView:
    """One panel as rendered: a chart, or a note on why there is none."""

    name: str
    title: str
    about: str
    state: str  # "chart", "no data" or "error"
    note: str = ""
    chart_html: str = ""
    columns: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Dashboard:
    """What a build wrote."""

    path: Path
    panels: list[PanelView]
    warehouse_found: bool

    @property
    def errors(self) -> list[PanelView]:
        return [p for p in self.panels if p.state == "error"]


def _cell(column: str, value: Any) -> str:
    """A table cell: exact money, percentages for rates, ISO times."""
    if value is None:
        return "—"
    if isinstance(value, Decimal) and ("cost" in column or column.endswith("_usd")):
        return money(value)
    if isinstance(value, float) and column.endswith(("_rate", "_share", "burn")):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _no_data_note(result: QueryResult, warehouse_found: bool) -> str:
    if not warehouse_found:
        return "No data: the warehouse has not been created yet (run the warehouse load)."
    if result.status is Status.MISSING:
        return f"No data: {result.reason}."
    return "No data: the query returned no rows."


def _run(con: duckdb.DuckDBPyConnection, sql_file: Path) -> tuple[QueryResult | None, str]:
    """The query's result, or None and the first line of its error."""
    import duckdb

    query = load_query(sql_file)
    try:
        return run_query_file(con, query), ""
    except duckdb.Error as exc:
        return None, f"Error in {sql_file.name}: {str(exc).splitlines()[0]}"


def _panel(con: duckdb.DuckDBPyConnection, sql_file: Path, warehouse_found: bool) -> PanelView:
    result, error = _run(con, sql_file)
    if result is None:
        query = load_query(sql_file)
        return PanelView(query.name, query.title, query.about, state="error", note=error)
    query = result.query
    if result.status is not Status.OK:
        note = _no_data_note(result, warehouse_found)
        return PanelView(query.name, query.title, query.about, state="no data", note=note)
    figure = CHARTS[query.name](result.rows)
    chart_html = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{query.name}",
        config={"displaylogo": False, "responsive": True},
    )
    return PanelView(
        query.name,
        query.title,
        query.about,
        state="chart",
        chart_html=chart_html,
        columns=result.columns,
        table=[[_cell(c, row[c]) for c in result.columns] for row in result.rows],
    )


def _open(warehouse: Path) -> tuple[duckdb.DuckDBPyConnection, bool]:
    import duckdb

    if not warehouse.exists():
        # An empty in-memory database: every panel renders as "no data".
        con = duckdb.connect(":memory:")
        found = False
    else:
        try:
            con = duckdb.connect(str(warehouse), read_only=True)
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0]
            raise ReportError(f"cannot open the warehouse {warehouse}: {reason}") from exc
        found = True
    con.execute("SET TimeZone = 'UTC'")
    return con, found


def build_dashboard(
    warehouse: Path, reports_dir: Path, out_dir: Path, *, now: datetime | None = None
) -> Dashboard:
    """Write ``out_dir/index.html`` from the warehouse; safe on an empty or missing one."""
    import jinja2
    from plotly.offline import get_plotlyjs

    queries = reports_dir / "queries"
    con, found = _open(warehouse)
    try:
        totals, error = _run(con, queries / "totals.sql")
        if totals is None:
            raise ReportError(error)
        panels = [_panel(con, queries / f"{name}.sql", found) for name in CHARTS]
    finally:
        con.close()

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(reports_dir / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    try:
        template = env.get_template(TEMPLATE)
    except jinja2.TemplateNotFound as exc:
        raise ReportError(
            f"dashboard template not found: {reports_dir / 'templates' / TEMPLATE}"
        ) from exc
    kpis = totals.rows[0] if totals.rows else None
    html = template.render(
        plotly_js=get_plotlyjs(),
        panels=panels,
        kpis=kpis,
        kpi_text={} if kpis is None else {c: _cell(c, v) for c, v in kpis.items()},
        warehouse=str(warehouse),
        warehouse_found=found,
        generated_at=(now or utcnow()).strftime("%Y-%m-%d %H:%M UTC"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    # Write then rename, so a browser or web server never serves half a page.
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return Dashboard(path=path, panels=panels, warehouse_found=found)
