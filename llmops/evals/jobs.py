"""What the eval flows call: run every suite against a label (nightly) and summarise the
trend of scores per prompt version and model group."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.models import EvalRun
from llmops.errors import ValidationError
from llmops.evals.report import run_markdown
from llmops.evals.runner import RunResult, ensure_eval_tenant, run_suite
from llmops.evals.suites import load_suite
from llmops.gateway.core import Gateway
from llmops.prompts.refs import resolve_ref

__all__ = ["SuiteOutcome", "run_labelled", "trend", "trend_markdown"]


@dataclass
class SuiteOutcome:
    """One suite's nightly result: its runs (one per model group), or why it was skipped."""

    suite: str
    runs: list[RunResult]
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "skipped": self.skipped,
            "runs": [
                {
                    "run_id": r.run_id,
                    "prompt": r.candidate.prompt.name,
                    "version": r.candidate.version,
                    "model_group": r.model_group,
                    "score": r.metrics["score"],
                    "unscored": len(r.metrics["unscored"]),
                    "failures": r.metrics["failures"],
                    "provider_calls": r.provider_calls,
                    "cost_usd": str(r.cost_usd),
                }
                for r in self.runs
            ],
        }

    def markdown(self) -> str:
        if self.skipped:
            return f"## Eval `{self.suite}` skipped\n\n{self.skipped}\n"
        return "\n".join(run_markdown(r) for r in self.runs)


async def run_labelled(
    engine: Engine,
    gateway: Gateway,
    suite_path: Path,
    evals_dir: Path,
    *,
    label: str = "production",
    fresh: bool = True,
) -> SuiteOutcome:
    """Run the suite on the version ``label`` points at, for each of its model groups.

    ``fresh`` calls the models again (nightly runs watch live models drift) while still
    storing the outputs; a prompt without the label is skipped with the reason.
    """
    suite = load_suite(suite_path, evals_dir)
    name = suite.spec.prompt
    try:
        with Session(engine) as session:
            ref = resolve_ref(session, name, label)
    except ValidationError as exc:
        return SuiteOutcome(suite.spec.name, [], skipped=str(exc))
    await asyncio.to_thread(ensure_eval_tenant, gateway, engine, suite)
    groups: list[str | None] = [*suite.spec.model_groups] or [None]
    runs = [
        await run_suite(engine, gateway, suite, ref, model_group=g, use_cache=not fresh)
        for g in groups
    ]
    return SuiteOutcome(suite.spec.name, runs)


def trend(engine: Engine, suite: str, limit: int = 30) -> list[dict[str, Any]]:
    """The latest completed runs of ``suite``: score per prompt version and model group."""
    with Session(engine) as session:
        rows = session.exec(
            select(EvalRun)
            .where(EvalRun.suite == suite, EvalRun.status == "completed")
            .order_by(col(EvalRun.started_at).desc())
            .limit(limit)
        ).all()
    return [
        {
            "started_at": r.started_at.strftime("%Y-%m-%d %H:%M"),
            "prompt_version": r.prompt_version,
            "model_group": r.model_group,
            "score": (r.metrics or {}).get("score"),
            "unscored": r.items_unscored,
            "passed": r.passed,
        }
        for r in rows
    ]


def trend_markdown(suite: str, rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`trend` rows."""
    out = [
        f"### Trend of `{suite}`",
        "",
        "| run started (UTC) | prompt version | model group | score | unscored | passed |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in rows:
        score = "n/a" if r["score"] is None else f"{r['score']:.3f}"
        version = "file" if r["prompt_version"] is None else f"v{r['prompt_version']}"
        out.append(
            f"| {r['started_at']} | {version} | {r['model_group']} | {score} | "
            f"{r['unscored']} | {r['passed']} |"
        )
    return "\n".join(out) + "\n"
