"""``llmops tenants ...`` and ``llmops gateway serve``: Typer apps registered by ``llmops.cli``.

Only Typer is imported here at module level; each command imports what it needs, so
``llmops --help`` stays fast and never loads LiteLLM, SQLModel or uvicorn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["gateway_app", "tenants_app"]

tenants_app = typer.Typer(
    help="Tenants (the gateway's customers) and their API keys.", no_args_is_help=True
)
gateway_app = typer.Typer(help="The OpenAI-compatible HTTP gateway.", no_args_is_help=True)


@contextmanager
def _ops_db() -> Iterator[Engine]:
    """The configured ops DB, checked to answer and to be migrated; disposed after."""
    from sqlalchemy import inspect

    from llmops.db.engine import check_connection, describe_url, engine_from_settings
    from llmops.errors import DatabaseUnavailable
    from llmops.settings import get_settings

    url = get_settings().resolved_database_url
    engine = engine_from_settings()
    try:
        check_connection(engine)
        if not inspect(engine).has_table("tenants"):
            raise DatabaseUnavailable(
                f"the ops database at {describe_url(url)} has no schema yet: run `llmops init`"
            )
        yield engine
    finally:
        engine.dispose()


@tenants_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name, e.g. 'Acme Corp'.")],
    tenant_id: Annotated[
        str | None,
        typer.Option("--id", help="Tenant id (lowercase slug). Default: derived from NAME."),
    ] = None,
    stripe_customer: Annotated[
        str | None, typer.Option("--stripe-customer", help="Stripe customer id (cus_...).")
    ] = None,
    plan: Annotated[str | None, typer.Option(help="Billing plan name.")] = None,
) -> None:
    """Create a tenant and print its API key (shown this once only)."""
    from llmops.errors import ValidationError
    from llmops.tenants import create_tenant, slugify

    tenant_id = tenant_id or slugify(name)
    if not tenant_id:
        raise ValidationError(f"cannot derive a tenant id from {name!r}: pass --id")
    with _ops_db() as engine:
        tenant, key = create_tenant(
            engine, tenant_id, name, stripe_customer_id=stripe_customer, plan=plan
        )
    typer.echo(f"created tenant {tenant.id} ({tenant.name})")
    typer.echo(f"api key: {key}")
    typer.secho(
        "warning: store this key now; it will not be shown again "
        f"(`llmops tenants rotate-key {tenant.id}` issues a new one).",
        fg=typer.colors.YELLOW,
        err=True,
    )


@tenants_app.command("list")
def list_() -> None:
    """List tenants (key prefixes only: keys themselves are never stored)."""
    from llmops.demo import format_table
    from llmops.tenants import list_tenants

    with _ops_db() as engine:
        tenants = list_tenants(engine)
    if not tenants:
        typer.echo("no tenants yet: create one with `llmops tenants create NAME`")
        return
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "key": f"{t.api_key_prefix}..." if t.api_key_prefix else "",
            "plan": t.plan,
            "stripe customer": t.stripe_customer_id,
            "status": "active" if t.active else "revoked",
            "created (UTC)": t.created_at.strftime("%Y-%m-%d %H:%M"),
        }
        for t in tenants
    ]
    typer.echo(format_table(rows))


@tenants_app.command("revoke")
def revoke_(tenant_id: Annotated[str, typer.Argument(help="Tenant id.")]) -> None:
    """Deactivate a tenant: its API key is refused from now on."""
    from llmops.tenants import AUTH_CACHE_TTL_S, revoke

    with _ops_db() as engine:
        revoke(engine, tenant_id)
    typer.echo(
        f"revoked tenant {tenant_id} (running gateways refuse its key within "
        f"{AUTH_CACHE_TTL_S:g} s)"
    )


@tenants_app.command("rotate-key")
def rotate_key_(tenant_id: Annotated[str, typer.Argument(help="Tenant id.")]) -> None:
    """Issue a new API key for a tenant; the old key stops working."""
    from llmops.tenants import rotate_key

    with _ops_db() as engine:
        key = rotate_key(engine, tenant_id)
    typer.echo(f"api key: {key}")
    typer.secho(
        "warning: store this key now; it will not be shown again.",
        fg=typer.colors.YELLOW,
        err=True,
    )


@gateway_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes (LiteLLM bounds one per core).")
    ] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (the request log already records calls).")
    ] = False,
) -> None:
    """Serve the OpenAI-compatible gateway (POST /v1/chat/completions) until interrupted."""
    import signal

    import uvicorn

    from llmops.gateway.config import load_gateway_config
    from llmops.settings import get_settings

    # Fail fast, with one line, on a bad gateway file or an unready database; the app
    # itself is built by each worker process from the same settings.
    load_gateway_config(get_settings().gateway_config)
    with _ops_db():
        pass
    # uvicorn drains on SIGTERM (in-flight requests finish, the request log is flushed),
    # then re-raises the signal, so the process would die by it (143). After a clean
    # drain that is a normal stop: exit 0, so supervisors record no crash.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            "llmops.gateway.http:create_app_from_settings",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level="info",
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
