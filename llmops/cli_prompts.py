"""``llmops prompts``: push prompt files as immutable versions, inspect them, move labels.

Registered by ``llmops/cli.py``. The ops DB is created or upgraded on first use, so a new
checkout (or a CI job) needs no separate ``llmops init``. Bad input is one line on stderr
and exit code 1.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.errors import LLMOpsError

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["actor", "ops_db", "prompts_app"]

prompts_app = typer.Typer(
    help="Prompts as code: push prompts/*.yaml as immutable versions; labels (production, "
    "staging, any) point at versions; promotion needs a passing eval gate; every label "
    "move is audited.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@contextmanager
def ops_db() -> Iterator[Engine]:
    """The configured ops DB, upgraded to the latest schema."""
    from llmops.db.engine import check_connection, engine_from_settings
    from llmops.db.migrate import upgrade

    engine = engine_from_settings()
    try:
        check_connection(engine)
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def actor() -> str:
    """Who is acting, for the audit trail: ``LLMOPS_ACTOR``, else the OS user."""
    from llmops.settings import get_settings

    try:
        return get_settings().actor or getpass.getuser()
    except OSError:  # no user name in this environment (some containers)
        return "unknown"


_Name = Annotated[str, typer.Argument(help="Prompt name (prompts/<name>.yaml).")]


@prompts_app.command("push")
def push_cmd(
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Prompt folder. Default: LLMOPS_PROMPTS_DIR.")
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Why this change.")] = "",
    author: Annotated[str | None, typer.Option(help="Author. Default: LLMOPS_ACTOR.")] = None,
    label: Annotated[
        str | None, typer.Option(help="Also point this label (not production) at them.")
    ] = None,
) -> None:
    """Store every prompt file as a version (unchanged content keeps its version)."""
    from sqlmodel import Session

    from llmops.prompts.files import load_prompts
    from llmops.prompts.labels import move_label
    from llmops.prompts.store import push
    from llmops.settings import get_settings

    if label == "production":
        raise _fail("production moves only with `llmops prompts promote` (gated)")
    try:
        prompts = load_prompts(folder or get_settings().prompts_dir)
        if not prompts:
            raise _fail(f"no prompt files (*.yaml) in {folder or get_settings().prompts_dir}")
        who = author or actor()
        with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
            pushed = push(session, prompts, author=who, message=message)
            for p in pushed:
                if label:
                    move_label(session, p.name, label, p.version, actor=who, reason="push")
            session.commit()
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    for p in pushed:
        state = "new version" if p.created else "unchanged"
        extra = f", label {label}" if label else ""
        typer.echo(f"{p.name}: v{p.version} ({state}, {p.content_hash[:12]}{extra})")


@prompts_app.command("list")
def list_cmd() -> None:
    """Every stored prompt: latest version and labels."""
    from sqlmodel import Session

    from llmops.prompts.store import list_prompts

    with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
        rows = list_prompts(session)
    if not rows:
        typer.echo("no prompts stored yet: run `llmops prompts push`")
        return
    typer.echo(f"{'name':<24} {'latest':>6}  labels")
    for r in rows:
        labels = ", ".join(f"{k}=v{v}" for k, v in r.labels.items()) or "-"
        typer.echo(f"{r.name:<24} {'v' + str(r.latest):>6}  {labels}")


@prompts_app.command("show")
def show_cmd(
    name: _Name,
    version: Annotated[int | None, typer.Option(help="Version number.")] = None,
    label: Annotated[str | None, typer.Option(help="Label (default production).")] = None,
) -> None:
    """Print one stored version as YAML."""
    import yaml
    from sqlmodel import Session

    from llmops.prompts.store import get_version, resolve_prompt

    try:
        with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
            resolved = resolve_prompt(session, name, label=label, version=version)
            row = get_version(session, name, resolved.version)
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"# {name} v{row.version}  {row.content_hash[:12]}  by {row.author or '?'} at "
        f"{row.created_at:%Y-%m-%d %H:%M}Z  {row.message}"
    )
    typer.echo(yaml.safe_dump(row.body, sort_keys=False, width=100), nl=False)


@prompts_app.command("history")
def history_cmd(name: _Name) -> None:
    """Versions (newest first) and the audit trail of label moves."""
    from sqlmodel import Session

    from llmops.prompts.labels import label_events
    from llmops.prompts.store import versions

    try:
        with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
            rows = versions(session, name)
            events = label_events(session, name)
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"versions of {name}:")
    for v in rows:
        typer.echo(
            f"  v{v.version:<4} {v.created_at:%Y-%m-%d %H:%M:%S}Z  {v.content_hash[:12]}  "
            f"{v.author or '?':<12} {v.message}"
        )
    typer.echo("label moves:")
    if not events:
        typer.echo("  (none)")
    for e in events:
        was = f"v{e.from_version}" if e.from_version is not None else "-"
        forced = " FORCED" if e.forced else ""
        gate = f" gate {e.eval_run_id}" if e.eval_run_id else ""
        typer.echo(
            f"  {e.created_at:%Y-%m-%d %H:%M:%S}Z  {e.label:<11} {was:>4} -> v{e.to_version:<4} "
            f"by {e.actor or '?'}{forced}{gate}  {e.reason}"
        )


@prompts_app.command("diff")
def diff_cmd(
    name: _Name,
    old: Annotated[str, typer.Argument(help="Version (3, v3), label, or file.")],
    new: Annotated[
        str | None, typer.Argument(help="Version, label or file. Default: the prompt file.")
    ] = None,
) -> None:
    """Show what changed between two versions, labels or files (exit 0 either way)."""
    from sqlmodel import Session

    from llmops.prompts.refs import resolve_ref
    from llmops.prompts.store import diff
    from llmops.settings import get_settings

    new_ref = new or str(get_settings().prompts_dir / f"{name}.yaml")
    try:
        with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
            a = resolve_ref(session, name, old)
            b = resolve_ref(session, name, new_ref)
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    text = diff(a.prompt, b.prompt, old_label=a.label, new_label=b.label)
    typer.echo(text if text else f"no difference between {a.label} and {b.label}", nl=not text)


@prompts_app.command("promote")
def promote_cmd(
    name: _Name,
    version: Annotated[int, typer.Option(help="The version to promote.")],
    to: Annotated[str, typer.Option("--to", help="Label to move.")] = "production",
    force: Annotated[
        bool, typer.Option(help="Promote without a passing gate (recorded as forced).")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
) -> None:
    """Point a label at a version; needs a passing `llmops eval gate` for that version."""
    from sqlmodel import Session

    from llmops.prompts.labels import promote

    try:
        with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
            event = promote(
                session, name, version, label=to, actor=actor(), force=force, reason=reason
            )
            session.commit()
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    was = f"v{event.from_version}" if event.from_version is not None else "(unset)"
    how = "FORCED, no passing gate" if event.forced else f"gate {event.eval_run_id}"
    typer.echo(f"{name}: {to} {was} -> v{event.to_version} ({how})")


@prompts_app.command("rollback")
def rollback_cmd(
    name: _Name,
    label: Annotated[str, typer.Option(help="Label to move back.")] = "production",
    to: Annotated[
        int | None, typer.Option("--to", help="Version. Default: where it was before.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
) -> None:
    """Move a label back to its previous version (or --to V); audited."""
    from sqlmodel import Session

    from llmops.prompts.labels import rollback

    try:
        with ops_db() as engine, Session(engine, expire_on_commit=False) as session:
            event = rollback(
                session, name, label=label, to_version=to, actor=actor(), reason=reason
            )
            session.commit()
    except LLMOpsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{name}: {label} v{event.from_version} -> v{event.to_version} (rollback)")
