"""The cost dashboard and the analysis notebook over a warehouse loaded by the real loader.

Demo-like traffic is written to the ops DB through the ``RequestLog`` model (on SQLite
and Postgres) and loaded into DuckDB with ``load_request_log``. Tables that other
pipelines will load later (action outcomes, caps and their ledger, eval runs, Stripe
reconciliation) are created here with the columns the report queries name in their
``-- requires:`` headers, so those panels are tested before their loaders exist.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.db.models import RequestLog
from llmops.errors import ConfigError
from llmops.reports.build import build_dashboard
from llmops.reports.charts import CHARTS
from llmops.reports.queries import Status, load_query, run_query_file
from llmops.warehouse.load import connect, load_request_log

REPO = Path(__file__).resolve().parents[2]
REPORTS = REPO / "reports"
QUERIES = REPORTS / "queries"
NOTEBOOK = REPORTS / "notebooks" / "usage_analysis.ipynb"
START = datetime(2025, 3, 3, tzinfo=UTC)
DAYS = 5
TENANTS = ("acme", "globex", "initech")
FEATURES = ("ticket-summary", "reply-draft", "ticket-triage")
#: model -> (input, output) USD per million tokens, and typical latency in ms.
MODELS = {
    "openai/gpt-4o-mini": (Decimal("0.15"), Decimal("0.6"), 300),
    "openai/gpt-4o": (Decimal("2.5"), Decimal("10"), 900),
    "anthropic/claude-3-5-haiku": (Decimal("0.8"), Decimal("4"), 500),
}
#: Panels whose tables only other pipelines load; created by ``add_expected_tables``.
EXPECTED_ONLY = ("cost_per_successful_action", "budget_burn", "eval_scores", "stripe_drift")
M = Decimal(1_000_000)


@dataclass
class Traffic:
    rows: list[RequestLog]

    def cost_by(self, key: str) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for r in self.rows:
            totals[getattr(r, key)] += r.cost_usd
        return dict(totals)

    def actions(self) -> dict[tuple[str, str, str], Decimal]:
        """(tenant, feature, action) -> the action's cost."""
        cost: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for r in self.rows:
            if r.action_id:
                cost[(r.tenant_id, r.feature_id, r.action_id)] += r.cost_usd
        return dict(cost)


def demo_traffic(n_actions: int = 240, seed: int = 7) -> Traffic:
    """Deterministic, demo-like calls: actions of 1-3 calls over several days, with
    failures, fallbacks, cache hits and a few calls outside any action."""
    rng = random.Random(seed)
    rows: list[RequestLog] = []
    weights = {"acme": 5, "globex": 3, "initech": 1}
    for a in range(n_actions + 30):
        tenant = rng.choices(TENANTS, weights=[weights[t] for t in TENANTS])[0]
        feature = rng.choice(FEATURES)
        action = f"act-{a:05d}" if a < n_actions else None
        started = START + timedelta(seconds=rng.randrange(DAYS * 86_400))
        for c in range(rng.choice((1, 1, 2, 3)) if action else 1):
            model = rng.choices(list(MODELS), weights=[6, 2, 2])[0]
            price_in, price_out, latency = MODELS[model]
            status = "error" if rng.random() < 0.08 else "ok"
            cache_hit = status == "ok" and rng.random() < 0.15
            tokens_in, tokens_out = rng.randint(200, 4000), rng.randint(20, 800)
            cost = Decimal(0)
            if status == "ok" and not cache_hit:
                cost = (tokens_in * price_in + tokens_out * price_out) / M
            at = started + timedelta(seconds=4 * c)
            rows.append(
                RequestLog(
                    request_id=f"req_{a:05d}_{c}",
                    started_at=at,
                    ended_at=at + timedelta(milliseconds=latency),
                    logged_at=at + timedelta(milliseconds=latency + 5),
                    tenant_id=tenant,
                    feature_id=feature,
                    action_id=action,
                    model_group="fast",
                    model=model if status == "ok" else None,
                    provider=model.split("/")[0] if status == "ok" else None,
                    attempts=1 + (rng.random() < 0.1),
                    fallbacks_used=int(status == "ok" and rng.random() < 0.1),
                    cache_hit=cache_hit,
                    status=status,
                    error_class=None if status == "ok" else "rate_limit",
                    http_status=None if status == "ok" else 429,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out if status == "ok" else 0,
                    cost_usd=cost,
                    latency_ms=1 if cache_hit else int(rng.gauss(latency, latency / 4)) + 20,
                )
            )
    return Traffic(rows)


def load_traffic(engine: Engine, warehouse: Path, traffic: Traffic) -> None:
    """Write the calls through the ops DB model, then load them with the real loader."""
    with Session(engine, expire_on_commit=False) as session:
        session.add_all(traffic.rows)
        session.commit()
    stats = load_request_log(engine, warehouse, now=START + timedelta(days=30))
    assert stats.total_rows == len(traffic.rows)


#: The expected tables' columns (what the report queries' headers require).
EXPECTED_DDL = {
    "action_outcomes": "tenant_id VARCHAR, action_id VARCHAR, outcome VARCHAR, "
    "recorded_at TIMESTAMPTZ",
    "spend_caps": "id BIGINT, scope_key VARCHAR, tenant_id VARCHAR, feature_id VARCHAR, "
    "period VARCHAR, limit_usd DECIMAL(38, 12), mode VARCHAR",
    "budget_ledger": "cap_id BIGINT, window_start TIMESTAMPTZ, spent_usd DECIMAL(38, 12), "
    "reserved_usd DECIMAL(38, 12)",
    "eval_runs": "id VARCHAR, suite VARCHAR, prompt_name VARCHAR, prompt_version INTEGER, "
    "model_group VARCHAR, status VARCHAR, started_at TIMESTAMPTZ",
    "eval_results": "run_id VARCHAR, item_id VARCHAR, score DOUBLE, passed BOOLEAN",
    "reconciliation_drifts": "tenant_id VARCHAR, meter VARCHAR, window_start TIMESTAMPTZ, "
    "metered BIGINT, ledger_sent BIGINT, stripe BIGINT, drift BIGINT, created_at TIMESTAMPTZ",
}


def add_expected_tables(warehouse: Path, traffic: Traffic) -> dict[str, str]:
    """Create and fill the tables later pipelines will load; return each action's outcome."""
    rng = random.Random(11)
    outcomes = {
        (tenant, action): rng.choices(("success", "failure"), weights=[3, 1])[0]
        for tenant, _, action in traffic.actions()
    }
    with duckdb.connect(str(warehouse)) as con:
        for table, columns in EXPECTED_DDL.items():
            con.execute(f"CREATE TABLE {table} ({columns})")
        for (tenant, action), outcome in outcomes.items():
            # An earlier, superseded outcome for some: only the latest may count.
            if action.endswith("3"):
                con.execute(
                    "INSERT INTO action_outcomes VALUES (?, ?, ?, ?)",
                    [tenant, action, "success" if outcome == "failure" else "failure", START],
                )
            con.execute(
                "INSERT INTO action_outcomes VALUES (?, ?, ?, ?)",
                [tenant, action, outcome, START + timedelta(days=1)],
            )
        caps = [(1, "tenant:acme", "month", "50"), (2, "tenant:globex", "day", "0.2")]
        for cap_id, scope, period, limit in caps:
            con.execute(
                "INSERT INTO spend_caps VALUES (?, ?, NULL, NULL, ?, ?, 'hard')",
                [cap_id, scope, period, Decimal(limit)],
            )
        con.execute(
            "INSERT INTO budget_ledger VALUES (1, ?, 40, 1), (2, ?, 0.05, 0), (2, ?, 0.25, 0)",
            [START, START, START + timedelta(days=1)],
        )
        for i, (version, score) in enumerate([(1, 0.62), (2, 0.71), (2, 0.74), (3, 0.69)]):
            run = f"run{i}"
            con.execute(
                "INSERT INTO eval_runs VALUES (?, 'summaries', 'summarize', ?, 'fast', "
                "'completed', ?)",
                [run, version, START + timedelta(days=i)],
            )
            for item in range(4):
                con.execute(
                    "INSERT INTO eval_results VALUES (?, ?, ?, ?)",
                    [run, f"item{item}", score + (item - 1.5) / 100, item != 0],
                )
        for day in range(3):
            window = START + timedelta(days=day)
            for tenant in ("acme", "globex"):
                drift = 3 if (tenant, day) == ("globex", 2) else 0
                con.execute(
                    "INSERT INTO reconciliation_drifts VALUES (?, 'llm_tokens', ?, ?, ?, ?, ?, ?)",
                    [tenant, window, 1000, 1000, 1000 + drift, drift, window],
                )
    return {action: outcome for (_, action), outcome in outcomes.items()}


@pytest.fixture
def loaded(db_engine: Engine, tmp_path: Path) -> tuple[Path, Traffic]:
    """A warehouse loaded from demo-like traffic in the ops DB (SQLite and Postgres)."""
    warehouse = tmp_path / "warehouse.duckdb"
    traffic = demo_traffic()
    load_traffic(db_engine, warehouse, traffic)
    return warehouse, traffic


@pytest.fixture
def loaded_sqlite(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Path, Traffic]]:
    """The same from a SQLite ops DB only, for the slow browser, notebook and CLI tests:
    what they render comes from DuckDB, whichever ops DB it was loaded from."""
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        warehouse = tmp_path / "warehouse.duckdb"
        traffic = demo_traffic()
        load_traffic(engine, warehouse, traffic)
        yield warehouse, traffic
    finally:
        engine.dispose()


def run(warehouse: Path, name: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        result = run_query_file(con, QUERIES / f"{name}.sql")
    assert result.status is Status.OK, result.reason
    return result.rows


def per_unit(total: Decimal, count: int) -> Decimal:
    """Exact division rounded down to 1e-12 USD, as the SQL does it."""
    return (total * 10**12 // count) / Decimal(10**12)


# -- the queries: numbers a user relies on, checked against the ops DB rows -----------------


def test_cost_queries_match_the_ops_db_exactly(loaded: tuple[Path, Traffic]) -> None:
    warehouse, traffic = loaded
    by_tenant = run(warehouse, "cost_by_tenant")
    assert {r["tenant_id"]: r["cost_usd"] for r in by_tenant} == traffic.cost_by("tenant_id")
    assert by_tenant[0]["tenant_id"] == "acme"  # weighted 5:3:1
    assert all(isinstance(r["cost_usd"], Decimal) for r in by_tenant)
    by_feature = run(warehouse, "cost_by_feature")
    assert {r["feature_id"]: r["cost_usd"] for r in by_feature} == traffic.cost_by("feature_id")
    assert [r["cost_usd"] for r in by_feature] == sorted(
        (r["cost_usd"] for r in by_feature), reverse=True
    )

    by_day: dict[tuple[date, str], Decimal] = defaultdict(Decimal)
    for r in traffic.rows:
        by_day[(r.started_at.astimezone(UTC).date(), r.tenant_id)] += r.cost_usd
    assert {(r["day"], r["tenant_id"]): r["cost_usd"] for r in run(warehouse, "cost_by_day")} == (
        dict(by_day)
    )

    models = run(warehouse, "cost_by_model")
    calls = defaultdict(int)
    for r in traffic.rows:
        calls[r.model or "(none)"] += 1
    assert {r["model"]: r["calls"] for r in models} == calls
    assert sum(r["call_share"] for r in models) == pytest.approx(1.0, abs=1e-3)
    assert sum(r["cost_share"] for r in models) == pytest.approx(1.0, abs=1e-3)
    assert next(r for r in models if r["model"] == "(none)")["cost_usd"] == 0


def test_cost_per_action_is_exact_per_feature(loaded: tuple[Path, Traffic]) -> None:
    warehouse, traffic = loaded
    per_feature: dict[str, list[Decimal]] = defaultdict(list)
    for (_, feature, _), cost in traffic.actions().items():
        per_feature[feature].append(cost)
    rows = run(warehouse, "cost_per_action")
    assert {r["feature_id"] for r in rows} == set(FEATURES)
    for r in rows:
        costs = per_feature[r["feature_id"]]
        assert r["actions"] == len(costs)
        assert r["cost_usd"] == sum(costs, Decimal(0))
        assert r["cost_per_action"] == per_unit(sum(costs, Decimal(0)), len(costs))
        assert isinstance(r["cost_per_action"], Decimal)
    # Calls outside any action are not part of any action's cost.
    assert sum(r["calls"] for r in rows) == sum(1 for r in traffic.rows if r.action_id)


def test_cost_per_successful_action_counts_the_latest_outcome(
    loaded: tuple[Path, Traffic],
) -> None:
    warehouse, traffic = loaded
    outcomes = add_expected_tables(warehouse, traffic)
    spent: dict[str, Decimal] = defaultdict(Decimal)
    wins: dict[str, int] = defaultdict(int)
    for (_, feature, action), cost in traffic.actions().items():
        spent[feature] += cost
        wins[feature] += outcomes[action] == "success"
    rows = run(warehouse, "cost_per_successful_action")
    assert {r["feature_id"]: r["successful_actions"] for r in rows} == wins
    for r in rows:
        feature = r["feature_id"]
        assert r["cost_usd"] == spent[feature]
        assert r["cost_per_successful_action"] == per_unit(spent[feature], wins[feature])
        assert r["cost_per_successful_action"] > per_unit(spent[feature], r["actions"])


def test_latency_and_rates(loaded: tuple[Path, Traffic]) -> None:
    warehouse, traffic = loaded
    latency = {r["model"]: r for r in run(warehouse, "latency_by_model")}
    assert set(latency) == set(MODELS)
    for model, r in latency.items():
        samples = [
            x.latency_ms
            for x in traffic.rows
            if x.model == model and x.status == "ok" and not x.cache_hit
        ]
        assert r["calls"] == len(samples)
        assert min(samples) <= r["p50_ms"] <= r["p95_ms"] <= max(samples)
    assert latency["openai/gpt-4o"]["p50_ms"] > latency["openai/gpt-4o-mini"]["p50_ms"]

    rates = run(warehouse, "rates_by_day")
    assert [r["day"] for r in rates] == [(START + timedelta(days=d)).date() for d in range(DAYS)]
    for r in rates:
        rows = [x for x in traffic.rows if x.started_at.astimezone(UTC).date() == r["day"]]
        assert r["calls"] == len(rows)
        errors = sum(x.status != "ok" for x in rows) / len(rows)
        hits = sum(x.cache_hit for x in rows) / len(rows)
        assert r["error_rate"] == pytest.approx(errors, abs=1e-4)
        assert r["cache_hit_rate"] == pytest.approx(hits, abs=1e-4)


def test_expected_tables_queries(loaded: tuple[Path, Traffic]) -> None:
    warehouse, traffic = loaded
    add_expected_tables(warehouse, traffic)
    burn = run(warehouse, "budget_burn")
    # Each cap's latest window only; globex's second day is past its cap.
    assert [(r["scope_key"], r["spent_usd"], r["burn"]) for r in burn] == [
        ("tenant:globex", Decimal("0.25"), 1.25),
        ("tenant:acme", Decimal(40), 0.8),
    ]
    scores = run(warehouse, "eval_scores")
    assert [(r["prompt_version"], r["results"]) for r in scores] == [(1, 4), (2, 4), (2, 4), (3, 4)]
    assert [r["mean_score"] for r in scores] == pytest.approx([0.62, 0.71, 0.74, 0.69])
    assert all(r["pass_rate"] == 0.75 for r in scores)
    drift = run(warehouse, "stripe_drift")
    assert [(r["tenant_id"], r["drift"]) for r in drift if r["drift"]] == [("globex", 3)]
    assert len(drift) == 6


def test_every_query_file_has_a_header_and_a_panel() -> None:
    names = {p.stem for p in QUERIES.glob("*.sql")}
    assert set(CHARTS) | {"totals"} <= names
    for path in sorted(QUERIES.glob("*.sql")):
        query = load_query(path)
        assert query.title and query.requires, path


def test_a_query_file_without_a_requires_header_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("-- title: Something\nSELECT 1;\n")
    with pytest.raises(ConfigError, match=r"bad\.sql: requires: missing"):
        load_query(bad)
    bad.write_text("-- title: x\n-- requires: request_log tenant_id\nSELECT 1;\n")
    with pytest.raises(ConfigError, match="expected 'table"):
        load_query(bad)


# -- the dashboard ------------------------------------------------------------------------


def test_missing_tables_make_no_data_panels_that_name_them(
    loaded: tuple[Path, Traffic], tmp_path: Path
) -> None:
    warehouse, _ = loaded
    dashboard = build_dashboard(warehouse, REPORTS, tmp_path / "out")
    states = {p.name: p for p in dashboard.panels}
    assert [p.name for p in dashboard.panels] == list(CHARTS)
    for name in EXPECTED_ONLY:
        assert states[name].state == "no data"
        assert "not in the warehouse yet" in states[name].note
    assert "action_outcomes" in states["cost_per_successful_action"].note
    assert "spend_caps, budget_ledger" in states["budget_burn"].note
    assert "reconciliation_drifts" in states["stripe_drift"].note
    drawn = {n for n, p in states.items() if p.state == "chart"}
    assert drawn == set(CHARTS) - set(EXPECTED_ONLY)
    assert not dashboard.errors


def test_a_broken_query_is_an_error_panel_not_a_broken_page(
    loaded_sqlite: tuple[Path, Traffic], tmp_path: Path
) -> None:
    warehouse, _ = loaded_sqlite
    reports = tmp_path / "reports"
    shutil.copytree(REPORTS, reports, ignore=shutil.ignore_patterns("notebooks"))
    sql = reports / "queries" / "cost_by_feature.sql"
    sql.write_text(sql.read_text().replace("sum(cost_usd)", "sum(no_such_column)"))
    dashboard = build_dashboard(warehouse, reports, tmp_path / "out")
    assert [p.name for p in dashboard.errors] == ["cost_by_feature"]
    assert "no_such_column" in dashboard.errors[0].note
    assert sum(p.state == "chart" for p in dashboard.panels) == len(CHARTS) - 5
    assert "cost_by_tenant" in dashboard.path.read_text()


# -- in a real browser --------------------------------------------------------------------

CHROMIUM = Path(os.environ.get("LLMOPS_TEST_CHROMIUM", "/usr/bin/chromium"))

#: Drawn marks per Plotly chart: bars, line segments and points that have a shape.
MARKS_JS = """() => {
  const out = {};
  for (const div of document.querySelectorAll('.js-plotly-plot')) {
    const marks = [...div.querySelectorAll(
      '.cartesianlayer .trace .point path, .cartesianlayer .trace path.js-line, ' +
      '.cartesianlayer .trace path.point')]
      .filter(p => (p.getAttribute('d') || '').length > 2)
      .filter(p => { const b = p.getBBox(); return b.width > 0 || b.height > 0; });
    const svg = div.querySelector('svg.main-svg');
    out[div.id] = {
      svgWidth: svg.getBoundingClientRect().width,
      panelWidth: div.closest('section.panel').clientWidth,
      marks: marks.length,
      traces: div.querySelectorAll('.cartesianlayer .trace').length,
      width: div.getBoundingClientRect().width,
      height: div.getBoundingClientRect().height,
    };
  }
  return out;
}"""


@dataclass
class Rendered:
    charts: dict[str, dict[str, Any]]
    states: dict[str, str]
    notes: dict[str, str]
    errors: list[str]
    requests: list[str]
    kpis: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright (one per module: ~3 s to start)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def render(browser: Any, page_path: Path) -> Rendered:
    """Open the page from disk with every network request refused; read what it drew."""
    errors: list[str] = []
    requests: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        def refuse(route: Any) -> None:
            if not route.request.url.startswith(("file:", "data:", "blob:")):
                requests.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        page.route("**/*", refuse)
        page.goto(page_path.as_uri(), wait_until="load")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.plotly-graph-div')]"
            ".every(d => d.classList.contains('js-plotly-plot'))",
            timeout=30_000,
        )
        charts = page.evaluate(MARKS_JS)
        states = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('section.panel')]"
            ".map(s => [s.id.replace('panel-', ''), s.dataset.state]))"
        )
        notes = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('section.panel')]"
            ".map(s => [s.id.replace('panel-', ''), "
            "(s.querySelector('.no-data') || {innerText: ''}).innerText]))"
        )
        kpis = page.inner_text("#kpis")
    finally:
        context.close()
    return Rendered(charts, states, notes, errors, requests, kpis)


def test_every_chart_draws_in_headless_chromium_offline(
    loaded_sqlite: tuple[Path, Traffic], tmp_path: Path, browser: Any
) -> None:
    warehouse, traffic = loaded_sqlite
    add_expected_tables(warehouse, traffic)
    dashboard = build_dashboard(warehouse, REPORTS, tmp_path / "site")
    html = dashboard.path.read_text()
    assert html.count("<script src=") == 0  # nothing to fetch: plotly.js is inline, once
    assert html.count("Plotly.newPlot(") == len(CHARTS)

    page = render(browser, dashboard.path)

    assert page.errors == [] and page.requests == []
    assert page.states == dict.fromkeys(CHARTS, "chart")
    assert set(page.charts) == {f"chart-{name}" for name in CHARTS}
    for chart_id, drawn in page.charts.items():
        assert drawn["traces"] >= 1 and drawn["marks"] >= 1, (chart_id, drawn)
        assert drawn["width"] > 300 and drawn["height"] > 150, (chart_id, drawn)
        assert drawn["svgWidth"] <= drawn["panelWidth"], (chart_id, drawn)  # fits its panel
    # Marks match the data: one bar per tenant and per feature, two per model in the mix
    # (cost and call shares), a line per rate, a line per prompt version, per drift series.
    tenants = {r.tenant_id for r in traffic.rows}
    models = {r.model or "(none)" for r in traffic.rows}
    assert page.charts["chart-cost_by_tenant"]["marks"] == len(tenants)
    assert page.charts["chart-cost_by_feature"]["marks"] == len(FEATURES)
    assert page.charts["chart-cost_by_model"]["marks"] == 2 * len(models)
    assert page.charts["chart-latency_by_model"]["marks"] == 2 * len(MODELS)
    assert page.charts["chart-cost_by_day"]["traces"] == len(tenants)
    assert page.charts["chart-rates_by_day"]["traces"] == 3
    assert page.charts["chart-budget_burn"]["marks"] == 2
    assert page.charts["chart-eval_scores"]["traces"] == 3  # summarize v1, v2, v3
    assert page.charts["chart-stripe_drift"]["traces"] == 2
    total = sum((r.cost_usd for r in traffic.rows), Decimal(0))
    assert f"TOTAL COST\n${total.normalize()}\n" in page.kpis  # exact, every digit


@pytest.mark.parametrize("warehouse_kind", ["missing", "empty"])
def test_an_empty_warehouse_renders_no_data_panels_not_an_error(
    tmp_path: Path, warehouse_kind: str, browser: Any
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    if warehouse_kind == "empty":
        connect(warehouse).close()  # the loader's tables, no rows
    dashboard = build_dashboard(warehouse, REPORTS, tmp_path / "site")
    assert dashboard.warehouse_found is (warehouse_kind == "empty")
    assert warehouse.exists() is (warehouse_kind == "empty")  # a report creates nothing

    page = render(browser, dashboard.path)

    assert page.errors == [] and page.requests == []
    assert page.charts == {}
    assert page.states == dict.fromkeys(CHARTS, "no data")
    assert all(note.startswith("No data") for note in page.notes.values())
    assert "No data" in page.kpis
    if warehouse_kind == "empty":
        assert page.notes["cost_by_tenant"] == "No data: the query returned no rows."
        assert "action_outcomes" in page.notes["cost_per_successful_action"]


# -- the command ------------------------------------------------------------------------


def test_report_build_command_writes_the_dashboard(
    loaded_sqlite: tuple[Path, Traffic], tmp_path: Path, cli_env: Any, run_llmops: Any
) -> None:
    warehouse, _ = loaded_sqlite
    env = cli_env("http://127.0.0.1:9")
    env["LLMOPS_WAREHOUSE_PATH"] = str(warehouse)
    out = tmp_path / "site"
    result = run_llmops(env, "report", "build", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "index.html").is_file()
    assert f"dashboard: {out / 'index.html'} (7 of 11 panels drawn)" in result.stdout
    assert "Stripe drift: not in the warehouse yet: reconciliation_drifts" in result.stdout

    fresh = run_llmops(cli_env("http://127.0.0.1:9"), "report", "build")
    assert fresh.returncode == 0, fresh.stderr
    assert "every panel says no data" in fresh.stdout
    assert (Path(env["LLMOPS_DATA_DIR"]) / "reports" / "index.html").is_file()


def test_a_warehouse_locked_by_a_writer_is_one_clear_line(
    tmp_path: Path, cli_env: Any, run_llmops: Any
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    env = cli_env("http://127.0.0.1:9")
    env["LLMOPS_WAREHOUSE_PATH"] = str(warehouse)
    with connect(warehouse):  # a load in progress holds DuckDB's write lock
        result = run_llmops(env, "report", "build", "--out", str(tmp_path / "site"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: cannot open the warehouse {warehouse}: ")
    assert not (tmp_path / "site" / "index.html").exists()


def test_report_help_imports_nothing_heavy(cli_env: Any) -> None:
    import subprocess
    import sys

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from llmops.cli import app\n"
            "try:\n    app(['report', 'build', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('duckdb', 'plotly', 'jinja2', 'pandas', 'prefect') "
            "if m in sys.modules])",
        ],
        cwd=REPO,
        env=cli_env("http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--out" in probe.stdout
    assert "HEAVY []" in probe.stdout


# -- the notebook -----------------------------------------------------------------------


def cell_text(nb: Any, tag: str) -> str:
    """The text/plain output of the cell tagged ``tag``."""
    cell = next(c for c in nb.cells if tag in c.metadata.get("tags", []))
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif "data" in output:
            texts.append(output.data.get("text/plain", ""))
    return "\n".join(texts)


#: Appended to the notebook under test (never saved): the answers as JSON, exactly.
PROBE = """import json
print(json.dumps({
    "top_tenants": [[r.tenant_id, str(r.cost_usd)] for r in top_tenants.itertuples()],
    "per_success": {r.feature_id: [r.successful_actions, str(r.cost_per_successful_action)]
                    for r in answer.itertuples()},
    "call_share": dict(zip(mix.model, mix.call_share)),
}))"""


def test_notebook_answers_the_common_questions(
    loaded_sqlite: tuple[Path, Traffic], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    warehouse, traffic = loaded_sqlite
    outcomes = add_expected_tables(warehouse, traffic)
    monkeypatch.setenv("LLMOPS_WAREHOUSE_PATH", str(warehouse))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # kept clean
    nb.cells.append(nbformat.v4.new_code_cell(PROBE, metadata={"tags": ["probe"]}))
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()

    assert f"warehouse: {warehouse} ({len(traffic.rows):,} calls)" in cell_text(nb, "setup")
    answers = json.loads(cell_text(nb, "probe"))
    ranked = sorted(traffic.cost_by("tenant_id").items(), key=lambda kv: -kv[1])
    assert [[t, Decimal(c)] for t, c in answers["top_tenants"]] == [[t, c] for t, c in ranked]
    spent: dict[str, Decimal] = defaultdict(Decimal)
    wins: dict[str, int] = defaultdict(int)
    for (_, feature, action), cost in traffic.actions().items():
        spent[feature] += cost
        wins[feature] += outcomes[action] == "success"
    assert {f: [n, Decimal(c)] for f, (n, c) in answers["per_success"].items()} == {
        f: [wins[f], per_unit(spent[f], wins[f])] for f in FEATURES
    }
    n = len(traffic.rows)
    assert answers["call_share"] == pytest.approx(
        {m: sum((r.model or "(none)") == m for r in traffic.rows) / n for m in [*MODELS, "(none)"]},
        abs=1e-4,
    )
    # What a reader sees: the tables render, top tenant first, every model in the mix.
    top = cell_text(nb, "top-tenants")
    assert top.index(ranked[0][0]) < top.index(ranked[-1][0])
    mix = cell_text(nb, "model-mix")
    assert all(model in mix for model in MODELS)
    assert "cost_per_successful_action" in cell_text(nb, "cost-per-successful-action")
    assert "ticket-triage" in cell_text(nb, "model-mix-by-feature")


def test_notebook_without_outcomes_still_answers_cost_per_action(
    loaded_sqlite: tuple[Path, Traffic], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    warehouse, _ = loaded_sqlite
    monkeypatch.setenv("LLMOPS_WAREHOUSE_PATH", str(warehouse))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    text = cell_text(nb, "cost-per-successful-action")
    assert "cost_per_successful_action: not in the warehouse yet: action_outcomes" in text
    assert "cost_per_action" in text
