"""One Plotly figure per dashboard panel, built from the rows of its query.

Money arrives as Decimal and is plotted as float (a chart has no use for the 12th
decimal), but every hover label and the data table under each chart show the exact value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["CHARTS", "money", "short_money"]

Rows = list[dict[str, Any]]
#: Many bars stop being readable; the table under the chart keeps every row.
MAX_BARS = 20
#: Dollar ticks with three significant digits: "$0.0005", not Plotly's SI "$500µ".
MONEY_AXIS: dict[str, Any] = {"tickprefix": "$", "tickformat": ",.3~r"}


def money(value: Any) -> str:
    """An exact dollar amount for labels: ``$1,234.5678`` (trailing zeros trimmed)."""
    if value is None:
        return "—"
    amount = Decimal(value)
    text = f"{abs(amount):,.12f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{'-' if amount < 0 else ''}${whole}.{frac.ljust(2, '0')}"


def short_money(value: Any) -> str:
    """A bar label: three significant digits under a dollar, cents above (``$0.00518``)."""
    amount = Decimal(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount >= 100:
        return f"{sign}${amount:,.0f}"
    if amount >= 1 or amount == 0:
        return f"{sign}${amount:,.2f}"
    return f"{sign}${amount:.{2 - amount.adjusted()}f}"


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _figure(*, height: int = 340, **layout: Any) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 10, "r": 20, "t": 10, "b": 40},
        font={"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 13},
        legend={"orientation": "h", "y": -0.18},
        hoverlabel={"font_size": 13},
        **layout,
    )
    return fig


def _hbar(
    rows: Rows, label: str, value: str, *, axis: str, hover: Callable[[dict[str, Any]], str]
) -> go.Figure:
    """Horizontal bars, largest on top: the most readable shape for named categories."""
    import plotly.graph_objects as go

    shown = rows[:MAX_BARS]
    fig = _figure(height=max(220, 60 + 34 * len(shown)))
    fig.add_trace(
        go.Bar(
            x=[_f(r[value]) for r in shown],
            y=[str(r[label]) for r in shown],
            orientation="h",
            text=[short_money(r[value]) for r in shown],
            textposition="auto",
            customdata=[hover(r) for r in shown],
            hovertemplate="<b>%{y}</b><br>%{customdata}<extra></extra>",
            marker_color="#3b6fd8",
        )
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text=axis, rangemode="tozero", **MONEY_AXIS)
    return fig


def cost_by_tenant(rows: Rows) -> go.Figure:
    return _hbar(
        rows,
        "tenant_id",
        "cost_usd",
        axis="cost (USD)",
        hover=lambda r: f"{money(r['cost_usd'])} over {r['calls']:,} calls ({r['ok_calls']:,} ok)",
    )


def cost_by_feature(rows: Rows) -> go.Figure:
    return _hbar(
        rows,
        "feature_id",
        "cost_usd",
        axis="cost (USD)",
        hover=lambda r: f"{money(r['cost_usd'])} over {r['calls']:,} calls ({r['ok_calls']:,} ok)",
    )


def cost_by_model(rows: Rows) -> go.Figure:
    """The model mix: each model's share of spend next to its share of calls."""
    import plotly.graph_objects as go

    shown = rows[:MAX_BARS]
    fig = _figure(height=max(240, 80 + 44 * len(shown)), barmode="group")
    models = [str(r["model"]) for r in shown]
    detail = [f"{money(r['cost_usd'])}, {r['calls']:,} calls" for r in shown]
    for name, column, color in (
        ("share of cost", "cost_share", "#3b6fd8"),
        ("share of calls", "call_share", "#9bb5ea"),
    ):
        fig.add_trace(
            go.Bar(
                name=name,
                x=[_f(r[column]) or 0.0 for r in shown],
                y=models,
                orientation="h",
                customdata=detail,
                hovertemplate=f"<b>%{{y}}</b><br>{name}: %{{x:.1%}}<br>%{{customdata}}"
                "<extra></extra>",
                marker_color=color,
            )
        )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    return fig


def cost_by_day(rows: Rows) -> go.Figure:
    """Stacked daily spend, one colour per tenant."""
    import plotly.graph_objects as go

    fig = _figure(barmode="stack")
    for tenant in _unique(r["tenant_id"] for r in rows):
        mine = [r for r in rows if r["tenant_id"] == tenant]
        fig.add_trace(
            go.Bar(
                name=str(tenant),
                x=[r["day"] for r in mine],
                y=[_f(r["cost_usd"]) for r in mine],
                customdata=[f"{money(r['cost_usd'])}, {r['calls']:,} calls" for r in mine],
                hovertemplate=f"<b>{tenant}</b> %{{x|%Y-%m-%d}}<br>%{{customdata}}<extra></extra>",
            )
        )
    fig.update_yaxes(title_text="cost (USD)", rangemode="tozero", **MONEY_AXIS)
    fig.update_xaxes(**_day_axis(r["day"] for r in rows))
    return fig


def cost_per_action(rows: Rows) -> go.Figure:
    return _hbar(
        rows,
        "feature_id",
        "cost_per_action",
        axis="mean cost per action (USD)",
        hover=lambda r: (
            f"{money(r['cost_per_action'])} per action<br>{r['actions']:,} actions, "
            f"{r['calls']:,} calls, {money(r['cost_usd'])} in all<br>"
            f"p95 action: ${r['p95_action_cost_usd']:.6f}"
        ),
    )


def cost_per_successful_action(rows: Rows) -> go.Figure:
    return _hbar(
        rows,
        "feature_id",
        "cost_per_successful_action",
        axis="cost per successful action (USD)",
        hover=lambda r: (
            f"{money(r['cost_per_successful_action'])} per success<br>"
            f"{r['successful_actions']:,} of {r['with_outcome']:,} actions succeeded "
            f"({(r['success_rate'] or 0):.1%}), {money(r['cost_usd'])} spent"
        ),
    )


def latency_by_model(rows: Rows) -> go.Figure:
    import plotly.graph_objects as go

    shown = rows[:MAX_BARS]
    fig = _figure(height=max(240, 80 + 44 * len(shown)), barmode="group")
    for name, column, color in (("p50", "p50_ms", "#9bb5ea"), ("p95", "p95_ms", "#3b6fd8")):
        fig.add_trace(
            go.Bar(
                name=name,
                x=[r[column] for r in shown],
                y=[str(r["model"]) for r in shown],
                orientation="h",
                text=[f"{r[column]:,} ms" for r in shown],
                textposition="auto",
                customdata=[f"{r['calls']:,} calls" for r in shown],
                hovertemplate=f"<b>%{{y}}</b><br>{name}: %{{x:,}} ms (%{{customdata}})"
                "<extra></extra>",
                marker_color=color,
            )
        )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text="latency (ms)", rangemode="tozero")
    return fig


def rates_by_day(rows: Rows) -> go.Figure:
    import plotly.graph_objects as go

    fig = _figure()
    days = [r["day"] for r in rows]
    for name, column, color in (
        ("errors", "error_rate", "#d64545"),
        ("fallbacks", "fallback_rate", "#e0a100"),
        ("cache hits", "cache_hit_rate", "#2f9e6e"),
    ):
        fig.add_trace(
            go.Scatter(
                name=name,
                x=days,
                y=[_f(r[column]) for r in rows],
                mode="lines+markers",
                line={"color": color, "width": 2},
                customdata=[r["calls"] for r in rows],
                hovertemplate=f"%{{x|%Y-%m-%d}} {name}: %{{y:.1%}} of %{{customdata:,}} calls"
                "<extra></extra>",
            )
        )
    fig.update_yaxes(title_text="share of calls", tickformat=".1~%", rangemode="tozero")
    fig.update_xaxes(**_day_axis(days))
    return fig


def budget_burn(rows: Rows) -> go.Figure:
    """Each cap's burn as a bar against a 100% line; red at or past the limit."""
    import plotly.graph_objects as go

    shown = rows[:MAX_BARS]
    fig = _figure(height=max(220, 60 + 34 * len(shown)))
    burn = [_f(r["burn"]) or 0.0 for r in shown]
    fig.add_trace(
        go.Bar(
            x=burn,
            y=[f"{r['scope_key']} ({r['period']}, {r['mode']})" for r in shown],
            orientation="h",
            text=[f"{b:.0%}" for b in burn],
            textposition="auto",
            customdata=[
                f"{money(r['spent_usd'])} spent + {money(r['reserved_usd'])} reserved "
                f"of {money(r['limit_usd'])}"
                for r in shown
            ],
            hovertemplate="<b>%{y}</b><br>%{x:.1%} burned<br>%{customdata}<extra></extra>",
            marker_color=[
                "#d64545" if b >= 1 else "#e0a100" if b >= 0.8 else "#3b6fd8" for b in burn
            ],
        )
    )
    fig.add_vline(x=1.0, line_dash="dash", line_color="#555", annotation_text="cap")
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(tickformat=".0%", rangemode="tozero", title_text="spent / limit")
    return fig


def eval_scores(rows: Rows) -> go.Figure:
    """Mean score per eval run over time, one line per prompt version."""
    import plotly.graph_objects as go

    fig = _figure()
    keys = _unique((r["prompt_name"], r["prompt_version"]) for r in rows)
    for name, version in keys:
        mine = [r for r in rows if (r["prompt_name"], r["prompt_version"]) == (name, version)]
        fig.add_trace(
            go.Scatter(
                name=f"{name} v{version}",
                x=[r["started_at"] for r in mine],
                y=[_f(r["mean_score"]) for r in mine],
                mode="lines+markers",
                marker={"size": 9},
                customdata=[
                    f"{r['suite']} on {r['model_group']}: pass rate {(r['pass_rate'] or 0):.0%}, "
                    f"{r['results']:,} results"
                    for r in mine
                ],
                hovertemplate=f"<b>{name} v{version}</b> %{{x|%Y-%m-%d %H:%M}}<br>"
                "mean score %{y:.3f}<br>%{customdata}<extra></extra>",
            )
        )
    # Not from zero: the differences between versions are what a reader looks for.
    fig.update_yaxes(title_text="mean score")
    fig.update_xaxes(type="date")
    return fig


def stripe_drift(rows: Rows) -> go.Figure:
    """Stripe minus ledger per reconciled window; anything off the zero line is drift."""
    import plotly.graph_objects as go

    fig = _figure()
    for tenant, meter in _unique((r["tenant_id"], r["meter"]) for r in rows):
        mine = [r for r in rows if (r["tenant_id"], r["meter"]) == (tenant, meter)]
        fig.add_trace(
            go.Scatter(
                name=f"{tenant} · {meter}",
                x=[r["window_start"] for r in mine],
                y=[_f(r["drift"]) for r in mine],
                mode="lines+markers",
                marker={"size": 8},
                customdata=[
                    f"Stripe {r['stripe_value']}, ledger {r['ledger_value']}" for r in mine
                ],
                hovertemplate=f"<b>{tenant} · {meter}</b> %{{x|%Y-%m-%d %H:%M}}<br>"
                "drift %{y}<br>%{customdata}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line_color="#555", line_width=1)
    fig.update_yaxes(title_text="Stripe − ledger (meter units)", zeroline=True)
    fig.update_xaxes(type="date")
    return fig


def _day_axis(days: Iterable[Any]) -> dict[str, Any]:
    """A date axis for daily points: one tick per day while that stays readable."""
    axis: dict[str, Any] = {"type": "date", "tickformat": "%b %d"}
    if len(set(days)) <= 14:
        axis["dtick"] = 86_400_000  # one day in ms; else Plotly picks a readable step
    return axis


def _unique(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


#: Panel name (its SQL file's stem) -> the chart of its rows. Order is the page's order.
CHARTS: dict[str, Callable[[Rows], go.Figure]] = {
    "cost_by_tenant": cost_by_tenant,
    "cost_by_feature": cost_by_feature,
    "cost_by_model": cost_by_model,
    "cost_by_day": cost_by_day,
    "cost_per_action": cost_per_action,
    "cost_per_successful_action": cost_per_successful_action,
    "latency_by_model": latency_by_model,
    "rates_by_day": rates_by_day,
    "budget_burn": budget_burn,
    "eval_scores": eval_scores,
    "stripe_drift": stripe_drift,
}
