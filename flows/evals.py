"""Evals: run every suite against the prompts the ``production`` label points at, and gate
a candidate prompt against its baseline.

Schedule: ``evals-nightly`` at 02:30 UTC (``prefect.yaml``); ``eval-gate`` ad hoc.
Inputs: suite names (default: every file in ``evals/suites/``), the label, whether to call
the models afresh (nightly: yes, to watch live models drift).
Outputs: eval runs and results in the ops DB and DuckDB (trends per prompt version and
model group), one markdown artifact per suite (metrics, worst examples, trend), and the
gate report. Concurrency is asyncio inside the engine, one task per suite; a retried task
reuses every output already cached, so nothing is paid for twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact
from sqlmodel import Session

from flows._common import gateway, ops_engine, retry_if_retryable, settings, traced
from llmops.alerts import check_eval_runs
from llmops.evals.gate import run_gate
from llmops.evals.jobs import run_labelled, trend, trend_markdown
from llmops.evals.report import gate_markdown, gate_text
from llmops.evals.suites import load_suite, suite_paths
from llmops.evals.warehouse import load_eval_runs
from llmops.prompts.refs import resolve_ref


def _artifact_key(suite: str) -> str:
    return "eval-" + suite.replace("_", "-").lower()


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_if_retryable)
async def eval_suite(suite: str, label: str, fresh: bool) -> dict[str, Any]:
    """Run one suite on the labelled version; publish its report; load the warehouse."""
    current = settings()
    engine = ops_engine(current.resolved_database_url)
    path = current.evals_dir / "suites" / f"{suite}.yaml"
    gw = gateway()
    try:
        outcome = await run_labelled(engine, gw, path, current.evals_dir, label=label, fresh=fresh)
    finally:
        await gw.aclose()
    run_ids = [r.run_id for r in outcome.runs]
    await asyncio.to_thread(load_eval_runs, engine, current.resolved_warehouse_path, run_ids)
    history = await asyncio.to_thread(trend, engine, outcome.suite)
    await acreate_markdown_artifact(
        key=_artifact_key(outcome.suite),
        markdown=outcome.markdown() + "\n" + trend_markdown(outcome.suite, history),
        description=f"eval suite {outcome.suite}",
    )
    summary = outcome.summary()
    raised = await asyncio.to_thread(check_eval_runs, engine, outcome.suite, summary["runs"])
    summary["alerts"] = [r.key for r in raised]
    return summary


@flow(name="evals-nightly", log_prints=True)
@traced
async def evals_nightly(
    suites: list[str] | None = None, label: str = "production", fresh: bool = True
) -> list[dict[str, Any]]:
    """Run ``suites`` (default: all) against ``label``; return one summary per suite."""
    names = suites or [p.stem for p in suite_paths(settings().evals_dir)]
    summaries = []
    for name in names:  # one at a time: each suite is already concurrent inside
        summaries.append(await eval_suite(name, label, fresh))
    for s in summaries:
        print(s["suite"], s["skipped"] or [(r["model_group"], r["score"]) for r in s["runs"]])
    return summaries


@flow(name="eval-gate", log_prints=True)
@traced
async def eval_gate(suite: str, candidate: str, baseline: str = "production") -> dict[str, Any]:
    """Gate ``candidate`` (version, label or file) against ``baseline`` on ``suite``."""
    current = settings()
    engine = ops_engine(current.resolved_database_url)
    loaded = load_suite(current.evals_dir / "suites" / f"{suite}.yaml", current.evals_dir)
    with Session(engine) as session:
        cand = resolve_ref(session, loaded.spec.prompt, candidate)
        base = resolve_ref(session, loaded.spec.prompt, baseline)
    gw = gateway()
    try:
        report = await run_gate(engine, gw, loaded, cand, base, actor="prefect")
    finally:
        await gw.aclose()
    print(gate_text(report))
    await acreate_markdown_artifact(
        key=_artifact_key(f"gate-{suite}"), markdown=gate_markdown(report), description="gate"
    )
    return {"passed": report.passed, "gate_id": report.gate_id, "reasons": report.reasons}
