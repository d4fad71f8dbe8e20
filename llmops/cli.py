"""The ``llmops`` command. Heavy libraries (LiteLLM, Prefect, GX) are imported lazily."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from llmops.cli_alerts import alerts_app
from llmops.cli_billing import billing_app, stripe_sim_app
from llmops.cli_blocks import blocks_app
from llmops.cli_caps import caps_app
from llmops.cli_eval import eval_app
from llmops.cli_gateway import gateway_app, tenants_app
from llmops.cli_jobs import jobs_app
from llmops.cli_prompts import prompts_app
from llmops.cli_report import report_app
from llmops.cli_stack import stack_app
from llmops.errors import LLMOpsError

app = typer.Typer(
    help="llmops: the production layer around LLM features (gateway, prompts, evals, "
    "queue, metering, billing), as Prefect pipelines you own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sim_app = typer.Typer(help="The provider simulator (an OpenAI-compatible test server).")
app.add_typer(sim_app, name="sim")
app.add_typer(caps_app, name="caps")
app.add_typer(tenants_app, name="tenants")
app.add_typer(gateway_app, name="gateway")
app.add_typer(blocks_app, name="blocks")
app.add_typer(stack_app, name="stack")
app.add_typer(alerts_app, name="alerts")
app.add_typer(report_app, name="report")
app.add_typer(prompts_app, name="prompts")
app.add_typer(eval_app, name="eval")
app.add_typer(billing_app, name="billing")
app.add_typer(stripe_sim_app, name="stripe-sim")
app.add_typer(jobs_app, name="jobs")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _migrate() -> str:
    """Bring the ops DB to the latest schema; return a description of where it is."""
    from llmops.db.engine import check_connection, describe_url, make_engine
    from llmops.db.migrate import upgrade
    from llmops.settings import get_settings

    url = get_settings().resolved_database_url
    engine = make_engine(url)
    try:
        check_connection(engine)
        upgrade(engine)
    finally:
        engine.dispose()
    return describe_url(url)


@app.command()
def init() -> None:
    """Create or upgrade the ops database (safe to run again)."""
    where = _migrate()
    typer.echo(f"ops database ready: {where}")


@app.command()
def demo(
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="Requests to run.")] = 300,
    concurrency: Annotated[int, typer.Option(min=1, max=512, help="Calls in flight.")] = 16,
) -> None:
    """Run the whole pipeline on embedded defaults, with the provider simulator."""
    import asyncio

    from llmops.gateway.config import load_gateway_config
    from llmops.prompts.files import load_prompts
    from llmops.settings import apply_offline_defaults, get_settings

    settings = get_settings()
    apply_offline_defaults(settings)
    started = time.perf_counter()
    # Fail fast, before any server starts, on a bad gateway config or prompt file.
    load_gateway_config(settings.gateway_config)
    load_prompts(settings.prompts_dir)
    where = _migrate()
    typer.echo(f"ops database: {where}")

    from llmops.sim import SimConfig, SimServer

    with SimServer(SimConfig.load(settings.sim_config)) as sim:
        os.environ["LLMOPS_SIM_URL"] = sim.base_url
        typer.echo(f"provider simulator: {sim.base_url}")
        from flows.demo import demo as demo_flow

        result = asyncio.run(demo_flow(n_requests=requests, concurrency=concurrency))

    from llmops.demo import format_table
    from llmops.warehouse.queries import run_query

    batch = result["batch"]
    warehouse = settings.resolved_warehouse_path
    rows = run_query(warehouse, settings.reports_dir / "queries" / "usage_summary.sql")
    typer.echo("")
    typer.echo(format_table(rows))
    typer.echo("")
    typer.echo(
        f"batch: {batch['items_ok']}/{batch['items']} requests ok, {batch['calls']} calls "
        f"logged for them ({batch['failed_calls']} failed, {batch['fallbacks']} fallbacks), "
        f"cost ${batch['cost_usd']}"
    )
    typer.echo(f"warehouse (DuckDB): {warehouse}")
    typer.echo(f"done in {time.perf_counter() - started:.1f}s")


@sim_app.command("serve")
def sim_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8900,
    config: Annotated[
        Path | None, typer.Option(help="Profiles file. Default: LLMOPS_SIM_CONFIG.")
    ] = None,
) -> None:
    """Serve the OpenAI-compatible provider simulator until interrupted."""
    from llmops.settings import get_settings
    from llmops.sim import SimConfig, serve

    serve(host, port, SimConfig.load(config or get_settings().sim_config))


def main() -> None:
    """Entry point: run the CLI, turning llmops errors into one-line messages."""
    try:
        app()
    except LLMOpsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
