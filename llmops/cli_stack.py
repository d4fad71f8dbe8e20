"""``llmops stack up|down|status``: the whole stack locally (``make serve`` / ``make stop``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["stack_app"]

stack_app = typer.Typer(
    help="Run the local stack: Prefect server and UI, a worker, the simulator, the gateway.",
    no_args_is_help=True,
)


def _ensure_pool(env: Mapping[str, str]) -> None:
    """Create the process work pool the deployments use (no-op when it exists)."""
    prefect = str(Path(sys.executable).parent / "prefect")
    found = subprocess.run(
        [prefect, "work-pool", "inspect", "llmops"], env=dict(env), capture_output=True
    )
    if found.returncode != 0:
        subprocess.run(
            [prefect, "work-pool", "create", "llmops", "--type", "process"],
            env=dict(env),
            check=True,
            capture_output=True,
        )


@stack_app.command("up")
def stack_up(
    prefect_port: Annotated[int, typer.Option(help="Prefect server and UI port.")] = 4200,
    sim_port: Annotated[int, typer.Option(help="Provider simulator port.")] = 8900,
    gateway_port: Annotated[int, typer.Option(help="HTTP gateway port.")] = 8080,
) -> None:
    """Start what is not running; print where each service is."""
    from llmops.cli import _migrate
    from llmops.settings import apply_offline_defaults, get_settings
    from llmops.stack import Ports, up

    settings = get_settings()
    apply_offline_defaults(settings)
    typer.echo(f"ops database ready: {_migrate()}")
    env = dict(os.environ)  # with the offline defaults and PREFECT_HOME applied
    up(
        settings.data_dir.resolve(),
        env,
        ports=Ports(prefect=prefect_port, sim=sim_port, gateway=gateway_port),
        echo=typer.echo,
        before_worker=_ensure_pool,
    )
    typer.echo(
        "deploy the pipelines with: "
        f"PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api prefect deploy --all; "
        "stop with: make stop"
    )


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service started by ``stack up``."""
    from llmops.settings import get_settings
    from llmops.stack import down

    if down(get_settings().data_dir.resolve(), echo=typer.echo) == 0:
        typer.echo("nothing was running")


@stack_app.command("status")
def stack_status() -> None:
    """Which services are running."""
    from llmops.settings import get_settings
    from llmops.stack import status

    for name, pid in status(get_settings().data_dir.resolve()).items():
        typer.echo(f"  {name:15} {'running, pid ' + str(pid) if pid else 'stopped'}")
