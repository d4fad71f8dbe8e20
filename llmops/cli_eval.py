"""``llmops eval``: run suites, gate a candidate prompt against a baseline, sample datasets.

``llmops eval gate`` exits 0 when the gate passes, 1 on a regression or a failed
threshold, 2 on bad input (a suite, dataset or candidate file that does not validate),
so CI can tell a worse prompt from a broken setup.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmops.cli_prompts import actor, ops_db
from llmops.errors import LLMOpsError, ValidationError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from llmops.evals.suites import LoadedSuite
    from llmops.prompts.refs import PromptRef

__all__ = ["eval_app"]

eval_app = typer.Typer(
    help="Evals: run a suite (dataset x prompt x model through the gateway, cached), gate a "
    "candidate against the production prompt for CI, propose golden examples.",
    no_args_is_help=True,
)
dataset_app = typer.Typer(help="Golden datasets (evals/datasets/*.jsonl).", no_args_is_help=True)
eval_app.add_typer(dataset_app, name="dataset")

EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2

_Suite = Annotated[str, typer.Option("--suite", help="Suite name (evals/suites/) or file.")]
_Group = Annotated[
    str | None, typer.Option("--model-group", help="Model group. Default: the suite's/prompt's.")
]


def _bad(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=EXIT_BAD_INPUT)


def _load_suite(ref: str) -> LoadedSuite:
    from llmops.evals.suites import load_suite
    from llmops.settings import get_settings

    evals_dir = get_settings().evals_dir
    path = Path(ref)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = evals_dir / "suites" / f"{ref}.yaml"
        if not path.is_file():
            known = ", ".join(p.stem for p in sorted((evals_dir / "suites").glob("*.yaml")))
            raise ValidationError(f"unknown suite {ref!r} (suites: {known or 'none'})")
        return load_suite(path, evals_dir)
    return load_suite(path)


def _ref(engine: Engine, name: str, ref: str) -> PromptRef:
    from sqlmodel import Session

    from llmops.prompts.refs import resolve_ref

    with Session(engine) as session:
        return resolve_ref(session, name, ref)


def _default_candidate(engine: Engine, name: str) -> PromptRef:
    """The production version if there is one, else the prompt file."""
    from llmops.settings import get_settings

    try:
        return _ref(engine, name, "production")
    except ValidationError:
        return _ref(engine, name, str(get_settings().prompts_dir / f"{name}.yaml"))


async def _with_gateway(engine: Engine, work: Any) -> Any:
    from llmops.gateway.core import Gateway
    from llmops.settings import apply_offline_defaults, get_settings

    settings = get_settings()
    apply_offline_defaults(settings)
    gateway = Gateway.from_settings(settings, engine)
    try:
        return await work(gateway)
    finally:
        await gateway.aclose()


def _write(path: Path | None, text: str, what: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        typer.echo(f"{what}: {path}")


def _to_warehouse(engine: Engine, run_ids: list[str]) -> None:
    from llmops.evals.warehouse import load_eval_runs
    from llmops.settings import get_settings

    load_eval_runs(engine, get_settings().resolved_warehouse_path, run_ids)


@eval_app.command("run")
def run_cmd(
    suite: _Suite,
    candidate: Annotated[
        str | None,
        typer.Option(help="Version, label or file. Default: production, else the file."),
    ] = None,
    model_group: _Group = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the markdown report here.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Call the models again.")] = False,
) -> None:
    """Run a suite on one prompt version for each of its model groups; print the metrics."""
    from llmops.evals.report import run_markdown
    from llmops.evals.runner import ensure_eval_tenant, run_suite

    try:
        loaded = _load_suite(suite)
        with ops_db() as engine:
            ref = (
                _ref(engine, loaded.spec.prompt, candidate)
                if candidate
                else _default_candidate(engine, loaded.spec.prompt)
            )
            groups: list[str | None] = (
                [model_group] if model_group else [*loaded.spec.model_groups] or [None]
            )

            async def work(gateway: Any) -> list[Any]:
                await asyncio.to_thread(ensure_eval_tenant, gateway, engine, loaded)
                return [
                    await run_suite(
                        engine, gateway, loaded, ref, model_group=g, use_cache=not no_cache
                    )
                    for g in groups
                ]

            runs = asyncio.run(_with_gateway(engine, work))
            _to_warehouse(engine, [r.run_id for r in runs])
    except LLMOpsError as exc:
        raise _bad(str(exc)) from None
    text = "\n".join(run_markdown(r) for r in runs)
    typer.echo(text)
    _write(markdown, text, "markdown")
    if any(r.metrics["failures"] for r in runs):
        raise typer.Exit(code=EXIT_REGRESSION)


@eval_app.command("gate")
def gate_cmd(
    suite: _Suite,
    candidate: Annotated[
        str | None,
        typer.Option(help="Version (3, v3), label, or prompt file. Default: the prompt file."),
    ] = None,
    baseline: Annotated[
        str, typer.Option(help="Version, label or file to compare with.")
    ] = "production",
    model_group: _Group = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the markdown report here.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=512)] = None,
) -> None:
    """Candidate vs baseline on a suite: exit 0 pass, 1 regression, 2 bad input."""
    from llmops.evals.gate import run_gate
    from llmops.evals.report import gate_junit, gate_markdown, gate_text
    from llmops.settings import get_settings

    try:
        loaded = _load_suite(suite)
        name = loaded.spec.prompt
        with ops_db() as engine:
            cand_ref = candidate or str(get_settings().prompts_dir / f"{name}.yaml")
            cand = _ref(engine, name, cand_ref)
            try:
                base: PromptRef | None = _ref(engine, name, baseline)
            except ValidationError:
                if baseline != "production":
                    raise
                base = None  # first version of a prompt: nothing in production yet

            async def work(gateway: Any) -> Any:
                return await run_gate(
                    engine,
                    gateway,
                    loaded,
                    cand,
                    base,
                    actor=actor(),
                    model_group=model_group,
                    concurrency=concurrency,
                )

            report = asyncio.run(_with_gateway(engine, work))
            _to_warehouse(
                engine, [r for r in (report.candidate_run_id, report.baseline_run_id) if r]
            )
    except LLMOpsError as exc:
        raise _bad(str(exc)) from None
    typer.echo(gate_text(report))
    _write(junit, gate_junit(report), "junit")
    _write(markdown, gate_markdown(report), "markdown")
    if not report.passed:
        raise typer.Exit(code=EXIT_REGRESSION)


@dataset_app.command("sample")
def sample_cmd(
    feature: Annotated[str, typer.Option(help="Feature whose traffic to sample.")],
    n: Annotated[int, typer.Option("--n", min=1, max=10_000, help="How many.")] = 50,
    prompt: Annotated[
        str | None, typer.Option(help="Prompt name, to turn requests back into variables.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write JSONL here (default: stdout).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Propose golden-set candidates from recent (redacted) request-log traffic."""
    import json

    from llmops.evals.sample import sample_candidates
    from llmops.prompts.files import load_prompt
    from llmops.settings import get_settings

    try:
        prompt_file = load_prompt(get_settings().prompts_dir / f"{prompt}.yaml") if prompt else None
        with ops_db() as engine:
            lines = sample_candidates(engine, feature, n, prompt=prompt_file, seed=seed)
    except LLMOpsError as exc:
        raise _bad(str(exc)) from None
    if not lines:
        raise _bad(f"no successful requests logged for feature {feature!r}")
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if out is None:
        typer.echo(text, nl=False)
        return
    if out.exists():
        raise _bad(f"{out} exists: choose a new file, then merge the reviewed lines")
    _write(out, text, f"{len(lines)} candidates (review them, set `expected`)")
