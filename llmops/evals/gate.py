"""Compare a candidate run with a baseline run and decide the gate.

Per metric: both means, the paired bootstrap CI of the per-example difference (trials
averaged per example first), and the decision. With ``rule: confident_drop`` (default)
a metric regresses when the whole interval lies below ``-max_drop``: the data show with
``confidence`` that the drop exceeds what the suite tolerates; an equal-quality change
(differences that straddle zero) passes. ``rule: non_inferiority`` is the stricter
reading: it fails whenever the interval still allows a drop above ``max_drop``.
Independently, any absolute ``threshold`` the candidate misses, or more unscored
examples than ``max_unscored`` allows, fails the gate. Each decision is stored
(:class:`~llmops.db.models.EvalGate`); promotion checks it.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from llmops.db.models import EvalGate, EvalRun
from llmops.errors import ValidationError
from llmops.evals.datasets import load_dataset
from llmops.evals.runner import Candidate, RunResult, ensure_eval_tenant, run_suite
from llmops.evals.stats import PairedCI, paired_bootstrap, regressed
from llmops.evals.suites import LoadedSuite
from llmops.gateway.core import Gateway
from llmops.ids import new_id

__all__ = ["GateReport", "MetricComparison", "compare", "run_gate"]


@dataclass
class MetricComparison:
    metric: str
    candidate_mean: float | None
    baseline_mean: float | None
    ci: PairedCI | None
    max_drop: float
    threshold: float | None
    regressed: bool = False
    below_threshold: bool = False
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.regressed or self.below_threshold


@dataclass
class GateReport:
    """Everything the gate decided, ready for the console, markdown and JUnit."""

    suite: str
    prompt: str
    rule: str
    candidate: str
    baseline: str | None
    candidate_run_id: str
    baseline_run_id: str | None
    model_group: str
    examples: int
    pairs: int
    metrics: list[MetricComparison]
    regressions: list[dict[str, Any]]
    worst: list[dict[str, Any]]
    unscored: list[dict[str, Any]]
    reasons: list[str]
    provider_calls: int = 0
    cached_outputs: int = 0
    gate_id: str | None = None
    notes: list[str] = field(default_factory=list)
    run_pairs: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(suite: LoadedSuite, cand: RunResult, base: RunResult | None) -> GateReport:
    """The gate decision for ``cand`` against ``base`` (None: absolute thresholds only)."""
    spec = suite.spec
    cand_items = cand.per_item()
    base_items = base.per_item() if base is not None else {}
    paired = sorted(set(cand_items) & set(base_items))
    runs = [cand] if base is None or base is cand else [cand, base]
    metrics = []
    reasons = list(cand.metrics.get("failures", []))
    for scorer_spec, _ in suite.scorers:
        m = scorer_spec.metric
        comparison = MetricComparison(
            metric=m,
            candidate_mean=cand.metrics["metrics"][m]["mean"],
            baseline_mean=base.metrics["metrics"][m]["mean"] if base is not None else None,
            ci=None,
            max_drop=scorer_spec.max_drop,
            threshold=scorer_spec.threshold,
        )
        mean = comparison.candidate_mean
        comparison.below_threshold = scorer_spec.threshold is not None and (
            mean is None or mean < scorer_spec.threshold
        )
        if base is not None and paired:
            ci = paired_bootstrap(
                [cand_items[i][m] for i in paired],
                [base_items[i][m] for i in paired],
                confidence=spec.confidence,
                n_resamples=spec.bootstrap_samples,
                seed=spec.seed,
            )
            comparison.ci = ci
            if regressed(ci, scorer_spec.max_drop, spec.rule):
                comparison.regressed = True
                comparison.reason = (
                    f"{m}: dropped {ci.drop:+.3f} (CI of the drop {ci.drop_low:+.3f} .. "
                    f"{ci.drop_high:+.3f} at {spec.confidence:.0%}) beyond max_drop "
                    f"{scorer_spec.max_drop:g}"
                )
                reasons.append(comparison.reason)
        if comparison.below_threshold and not comparison.reason:
            shown = "n/a" if mean is None else f"{mean:.3f}"
            comparison.reason = f"{m}: mean {shown} below threshold {scorer_spec.threshold:g}"
        metrics.append(comparison)
    by_id = {r.item_id: r for r in cand.results if r.trial == 0}
    base_by_id = {r.item_id: r for r in base.results if r.trial == 0} if base else {}
    regressions = []
    for item_id in paired:
        diff = cand_items[item_id]["score"] - base_items[item_id]["score"]
        if diff < 0:
            regressions.append(
                {
                    "item_id": item_id,
                    "baseline": base_items[item_id]["score"],
                    "candidate": cand_items[item_id]["score"],
                    "diff": diff,
                    "baseline_output": base_by_id[item_id].output,
                    "candidate_output": by_id[item_id].output,
                }
            )
    regressions.sort(key=lambda r: (r["diff"], r["item_id"]))
    worst = sorted(
        (
            {
                "item_id": i,
                "score": row["score"],
                "output": by_id[i].output,
                "reasons": "; ".join(
                    s["reason"] for s in by_id[i].scores.values() if not s["passed"]
                ),
            }
            for i, row in cand_items.items()
        ),
        key=lambda r: (r["score"], r["item_id"]),
    )[:10]
    notes = []
    if base is None:
        notes.append("no baseline: absolute thresholds only")
    return GateReport(
        suite=spec.name,
        prompt=cand.candidate.prompt.name,
        rule=spec.rule,
        candidate=cand.candidate.label,
        baseline=base.candidate.label if base else None,
        candidate_run_id=cand.run_id,
        baseline_run_id=base.run_id if base else None,
        model_group=cand.model_group,
        examples=len(cand.dataset.items) + len(cand.dataset.bad),
        pairs=len(paired),
        metrics=metrics,
        regressions=regressions,
        worst=[w for w in worst if float(w["score"] or 0.0) < 1.0],
        unscored=cand.metrics["unscored"],
        reasons=reasons,
        provider_calls=sum(r.provider_calls for r in runs),
        cached_outputs=sum(1 for r in runs for item in r.results if item.cached),
        notes=notes,
    )


async def run_gate(
    engine: Engine,
    gateway: Gateway,
    suite: LoadedSuite,
    candidate: Candidate,
    baseline: Candidate | None,
    *,
    actor: str = "",
    model_group: str | None = None,
    concurrency: int | None = None,
) -> GateReport:
    """Run candidate and baseline (concurrently, sharing one concurrency limit, both
    cached), compare them, and record the decision."""
    if candidate.prompt.name != suite.spec.prompt:
        raise ValidationError(
            f"suite {suite.spec.name!r} tests prompt {suite.spec.prompt!r}, "
            f"not {candidate.prompt.name!r}"
        )
    await asyncio.to_thread(ensure_eval_tenant, gateway, engine, suite)
    dataset = load_dataset(suite.dataset_path)
    semaphore = asyncio.Semaphore(concurrency or suite.spec.concurrency)
    groups: list[str | None] = [model_group] if model_group else [*suite.spec.model_groups]
    if not groups:
        groups = [None]  # the prompt's own model group

    async def pair(group: str | None) -> tuple[RunResult, RunResult | None]:
        def run(ref: Candidate) -> Any:
            return run_suite(
                engine,
                gateway,
                suite,
                ref,
                model_group=group,
                semaphore=semaphore,
                dataset=dataset,
            )

        if baseline is None:
            return await run(candidate), None
        if baseline.content_hash == candidate.content_hash:
            # The same content: one run serves as both sides (the outputs would be
            # cached copies of each other anyway).
            same = await run(candidate)
            return same, same
        cand, base = await asyncio.gather(run(candidate), run(baseline))
        return cand, base

    pairs = await asyncio.gather(*(pair(g) for g in groups))
    reports = [compare(suite, cand, base) for cand, base in pairs]
    report = reports[0] if len(reports) == 1 else _merge(reports)
    report.run_pairs = [(c.run_id, b.run_id if b else None) for c, b in pairs]
    report.gate_id = new_id("gate")
    await asyncio.to_thread(_record, engine, report, candidate, baseline, actor)
    return report


def _merge(reports: list[GateReport]) -> GateReport:
    """One report over several model groups: metrics and reasons named per group."""
    metrics, reasons = [], []
    regressions, worst, unscored = [], [], []
    for r in reports:
        group = r.model_group

        def tagged(rows: list[dict[str, Any]], group: str = group) -> list[dict[str, Any]]:
            return [{**x, "item_id": f"{x['item_id']}@{group}"} for x in rows]

        for m in r.metrics:
            metrics.append(replace(m, metric=f"{m.metric}@{group}"))
        reasons += [f"[{group}] {reason}" for reason in r.reasons]
        regressions += tagged(r.regressions)
        worst += tagged(r.worst)
        unscored += tagged(r.unscored)
    return replace(
        reports[0],
        model_group=", ".join(r.model_group for r in reports),
        metrics=metrics,
        reasons=reasons,
        regressions=regressions,
        worst=worst,
        unscored=unscored,
        pairs=sum(r.pairs for r in reports),
        provider_calls=sum(r.provider_calls for r in reports),
        cached_outputs=sum(r.cached_outputs for r in reports),
    )


def _record(
    engine: Engine,
    report: GateReport,
    candidate: Candidate,
    baseline: Candidate | None,
    actor: str,
) -> None:
    assert report.gate_id is not None
    with Session(engine) as session:
        for cand_id, base_id in report.run_pairs:
            run = session.get(EvalRun, cand_id)
            if run is not None and base_id != cand_id:
                run.baseline_run_id = base_id
                session.add(run)
        summary = report.as_dict()
        summary["regressions"] = summary["regressions"][:50]
        session.add(
            EvalGate(
                id=report.gate_id,
                suite=report.suite,
                prompt_name=report.prompt,
                candidate_hash=candidate.content_hash,
                candidate_version=candidate.version,
                baseline_version=baseline.version if baseline else None,
                candidate_run_id=report.candidate_run_id,
                baseline_run_id=report.baseline_run_id,
                passed=report.passed,
                report=_jsonable(summary),
                actor=actor,
            )
        )
        session.commit()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
