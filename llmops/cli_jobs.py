"""``llmops jobs ...``: submit jobs, read them, run a worker, and manage the dead-letter queue.

Registered by ``llmops/cli.py``. Only Typer is imported at module level; the queue, the
DB and the gateway load inside the commands. Jobs print as JSON (the same view as
``GET /v1/jobs/{id}``); bad input is one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["jobs_app"]

jobs_app = typer.Typer(
    help="The durable LLM job queue: submit, status, work, and the dead-letter queue.",
    no_args_is_help=True,
)
dlq_app = typer.Typer(
    help="Dead-lettered jobs: list, show, replay (idempotent), purge.", no_args_is_help=True
)
jobs_app.add_typer(dlq_app, name="dlq")

_Tenant = Annotated[str | None, typer.Option("--tenant", help="Tenant id.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def _ops_db() -> Iterator[Engine]:
    """The configured ops DB, checked to answer and to have the queue schema."""
    from sqlalchemy import inspect

    from llmops.db.engine import check_connection, describe_url, engine_from_settings

    engine = engine_from_settings()
    try:
        check_connection(engine)
        if not inspect(engine).has_table("tenant_callback_secrets"):
            raise _fail(
                f"the ops database at {describe_url(engine.url)} has no queue schema yet: "
                "run `llmops init`"
            )
        yield engine
    finally:
        engine.dispose()


def _variables(pairs: list[str], as_json: str | None) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    if as_json:
        loaded = json.loads(as_json)
        if not isinstance(loaded, dict):
            raise _fail("--vars-json must be a JSON object")
        variables.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"--var expects NAME=VALUE, got {pair!r}")
        variables[name] = value
    return variables


@jobs_app.command("submit")
def submit(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id (owner of the job).")],
    feature: Annotated[str, typer.Option("--feature", help="Feature id.")],
    prompt: Annotated[str | None, typer.Option(help="Stored prompt name.")] = None,
    label: Annotated[str | None, typer.Option(help="Prompt label (default production).")] = None,
    version: Annotated[int | None, typer.Option(help="Prompt version (not a label).")] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="Variable NAME=VALUE.")] = None,
    vars_json: Annotated[
        str | None, typer.Option("--vars-json", help="Prompt variables as a JSON object.")
    ] = None,
    message: Annotated[
        list[str] | None, typer.Option("--message", help="A user message (raw messages job).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system message before --message.")] = None,
    messages_file: Annotated[
        Path | None, typer.Option("--messages-file", help="JSON file: a list of messages.")
    ] = None,
    model_group: Annotated[str | None, typer.Option("--model-group", help="Model group.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Same key: same job.")
    ] = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts")] = 3,
    not_before: Annotated[
        str | None, typer.Option("--not-before", help="ISO time, e.g. 2026-01-01T09:00:00Z.")
    ] = None,
    callback_url: Annotated[str | None, typer.Option("--callback-url")] = None,
    action_id: Annotated[str | None, typer.Option("--action-id")] = None,
) -> None:
    """Submit a job (a prompt with variables, or raw messages) and print it."""
    from llmops.gateway.config import load_gateway_config
    from llmops.queue.jobs import enqueue
    from llmops.settings import get_settings

    body: dict[str, Any] = {
        "feature": feature,
        "priority": priority,
        "max_attempts": max_attempts,
    }
    messages: list[dict[str, Any]] = []
    if messages_file is not None:
        try:
            messages = json.loads(messages_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"--messages-file: {exc}") from None
    if system:
        messages.insert(0, {"role": "system", "content": system})
    messages += [{"role": "user", "content": text} for text in message or []]
    if prompt is not None:
        body["prompt"] = {
            "name": prompt,
            "label": label,
            "version": version,
            "variables": _variables(var or [], vars_json),
        }
        if messages:
            raise _fail("give --prompt or messages (--message/--messages-file), not both")
    elif messages:
        body["messages"] = messages
    else:
        raise _fail("give --prompt NAME (with --var) or --message TEXT")
    optional = {
        "model_group": model_group,
        "max_tokens": max_tokens,
        "idempotency_key": idempotency_key,
        "not_before": not_before,
        "callback_url": callback_url,
        "action_id": action_id,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    settings = get_settings()
    config = load_gateway_config(settings.gateway_config)
    with _ops_db() as engine:
        submitted = enqueue(
            engine, config, tenant, body, max_payload_bytes=settings.queue_max_payload_bytes
        )
    if not submitted.created:
        typer.secho("(idempotency key seen before: the existing job)", err=True)
    _echo_json(submitted.job)


@jobs_app.command("status")
def status(
    job_id: Annotated[str, typer.Argument(help="Job id (job_...).")],
    tenant: _Tenant = None,
) -> None:
    """Print a job: status, attempts, result, error, cost and attempt history."""
    from llmops.queue.jobs import get_job

    with _ops_db() as engine:
        _echo_json(get_job(engine, job_id, tenant_id=tenant))


@jobs_app.command("work")
def work(
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1000)] = 50,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    until_empty: Annotated[
        bool, typer.Option("--until-empty", help="Exit once no job is running or due soon.")
    ] = False,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="Claim nothing new after this.")
    ] = None,
    grace_s: Annotated[
        float, typer.Option("--grace-s", help="On SIGTERM/SIGINT: time to finish in flight.")
    ] = 30.0,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus /metrics here."),
    ] = None,
) -> None:
    """Run a queue worker in this process (the Prefect flow runs the same worker)."""
    import asyncio

    from llmops.queue.worker import QueueWorker, install_signal_handlers
    from llmops.settings import apply_offline_defaults, get_settings

    settings = get_settings()
    apply_offline_defaults(settings)

    async def main() -> dict[str, Any]:
        from llmops.gateway.core import Gateway

        with _ops_db() as engine:
            gateway = Gateway.from_settings(settings, engine)
            worker = QueueWorker.from_settings(
                settings, engine, gateway, batch_size=batch_size, concurrency=concurrency
            )
            install_signal_handlers(worker)
            stop_metrics = None
            if metrics_port is not None:
                from llmops.telemetry.metrics import serve_worker_metrics

                stop_metrics = serve_worker_metrics(worker, engine, metrics_port)
            try:
                stats = await worker.run(
                    until_empty=until_empty, max_seconds=max_seconds, grace_s=grace_s
                )
            finally:
                await gateway.aclose()
                if stop_metrics is not None:
                    stop_metrics()
            return {"worker": worker.worker_id, **stats.as_dict()}

    _echo_json(asyncio.run(main()))


@jobs_app.command("callback-secret")
def callback_secret(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace it with a new one.")] = False,
) -> None:
    """Print the tenant's callback signing secret (HMAC-SHA256 over the body)."""
    from sqlmodel import Session

    from llmops.db.models import Tenant
    from llmops.queue.callbacks import ensure_secret, rotate_secret

    with _ops_db() as engine:
        with Session(engine) as session:
            if session.get(Tenant, tenant) is None:
                raise _fail(f"unknown tenant {tenant!r}")
        typer.echo(rotate_secret(engine, tenant) if rotate else ensure_secret(engine, tenant))


@dlq_app.command("list")
def dlq_list(
    tenant: _Tenant = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Dead-lettered jobs, newest first: id, tenant, feature, attempts, last error."""
    from llmops.queue.store import JobStore

    with _ops_db() as engine:
        rows = JobStore(engine).list_dead(tenant, limit)
    if not rows:
        typer.echo("no dead-lettered jobs")
        return
    for row in rows:
        error = (row["error"] or "").replace("\n", " ")[:120]
        typer.echo(
            f"{row['id']}  {row['tenant_id']}  {row['feature_id']}  "
            f"attempts={row['attempts']}  {error}"
        )


@dlq_app.command("show")
def dlq_show(job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """A dead-lettered job with its last error and the history of its attempts."""
    from llmops.queue.jobs import get_job

    with _ops_db() as engine:
        job = get_job(engine, job_id, tenant_id=None)
    if job["status"] != "dead":
        typer.secho(f"(job is {job['status']}, not dead-lettered)", err=True)
    _echo_json(job)


@dlq_app.command("replay")
def dlq_replay(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids.")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every dead job (of --tenant).")] = False,
    tenant: _Tenant = None,
) -> None:
    """Queue dead jobs again with fresh attempts; replaying twice changes nothing."""
    from llmops.queue.store import JobStore

    if bool(job_ids) == all_jobs:
        raise _fail("give job ids or --all")
    with _ops_db() as engine:
        outcome = JobStore(engine).replay(None if all_jobs else job_ids, tenant)
    for job_id, what in outcome.items():
        typer.echo(f"{job_id}: {what}")
    typer.echo(f"replayed {sum(1 for w in outcome.values() if w == 'replayed')} job(s)")


@dlq_app.command("purge")
def dlq_purge(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids.")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every dead job (of --tenant).")] = False,
    tenant: _Tenant = None,
    older_than_days: Annotated[
        float | None, typer.Option("--older-than-days", help="Only jobs dead this long.")
    ] = None,
) -> None:
    """Delete dead-lettered jobs (only dead ones)."""
    from datetime import timedelta

    from llmops.ids import utcnow
    from llmops.queue.store import JobStore

    if bool(job_ids) == all_jobs:
        raise _fail("give job ids or --all")
    before = None if older_than_days is None else utcnow() - timedelta(days=older_than_days)
    with _ops_db() as engine:
        n = JobStore(engine).purge(None if all_jobs else job_ids, tenant, before)
    typer.echo(f"purged {n} dead job(s)")
