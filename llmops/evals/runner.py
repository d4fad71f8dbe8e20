"""The eval runner: dataset x prompt version x model group x trials through the gateway
core, concurrently (asyncio), with every output cached, every example scored or recorded
as unscored with its reason, and the run stored in the ops DB.

Calls go out as tenant ``eval`` (created if missing), feature ``eval-<suite>`` (and
``eval-<suite>-judge`` for the judge), each under the suite's daily spend cap, so eval
traffic is logged, capped and billed like any other and never mixed with a customer's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from llmops.db.models import EvalOutputCache, EvalResult, EvalRun, Tenant
from llmops.errors import ConfigError, GatewayError, LLMOpsError, RateLimited, RetryableError
from llmops.evals.cache import CacheWriter, OutputCache, output_key
from llmops.evals.datasets import Dataset, DatasetItem, load_dataset
from llmops.evals.judge import LlmJudge
from llmops.evals.scorers import Score, Scorer, ScorerError
from llmops.evals.suites import LoadedSuite
from llmops.gateway.core import ChatRequest, Gateway
from llmops.ids import new_id, utcnow
from llmops.prompts.refs import PromptRef

__all__ = [
    "EVAL_TENANT",
    "Candidate",
    "ItemResult",
    "RunResult",
    "ensure_eval_tenant",
    "run_suite",
]

EVAL_TENANT = "eval"
_T = TypeVar("_T")


#: What a run evaluates: a stored prompt version or an unpushed prompt file.
Candidate = PromptRef


@dataclass
class ItemResult:
    """One example x trial: its output and scores, or why it could not be scored."""

    item_id: str
    trial: int
    status: str = "scored"
    error: str | None = None
    output: str | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    score: float = 0.0
    passed: bool = False
    cached: bool = False
    request_id: str | None = None
    cost_usd: Decimal = Decimal(0)
    latency_ms: int = 0
    tags: tuple[str, ...] = ()


@dataclass
class RunResult:
    """A finished run: per-example results and the metrics computed from them."""

    run_id: str
    suite: str
    candidate: Candidate
    model_group: str
    dataset: Dataset
    results: list[ItemResult]
    metrics: dict[str, Any]
    provider_calls: int
    cost_usd: Decimal
    wall_s: float

    @property
    def unscored(self) -> list[ItemResult]:
        return [r for r in self.results if r.status != "scored"]

    def per_item(self) -> dict[str, dict[str, float]]:
        """Per example (trials averaged): metric -> score, plus ``score`` (weighted).
        Examples with any unscored trial are left out (they are reported separately)."""
        grouped: dict[str, list[ItemResult]] = {}
        for r in self.results:
            grouped.setdefault(r.item_id, []).append(r)
        out: dict[str, dict[str, float]] = {}
        for item_id, trials in grouped.items():
            if any(t.status != "scored" for t in trials):
                continue
            metrics = {m for t in trials for m in t.scores}
            row = {m: sum(t.scores[m]["score"] for t in trials) / len(trials) for m in metrics}
            row["score"] = sum(t.score for t in trials) / len(trials)
            out[item_id] = row
        return out


def ensure_eval_tenant(gateway: Gateway, engine: Engine, suite: LoadedSuite) -> None:
    """Create tenant ``eval`` if missing and set the suite's daily caps (call and judge)."""
    with Session(engine) as session:
        if session.get(Tenant, EVAL_TENANT) is None:
            session.add(Tenant(id=EVAL_TENANT, name="Evals (llmops eval)"))
            try:
                session.commit()
            except IntegrityError:  # created concurrently by another run
                session.rollback()
    spec = suite.spec
    gateway.budgets.set_cap(
        tenant_id=EVAL_TENANT,
        feature_id=spec.feature_id,
        limit_usd=spec.spend_cap_usd,
        period="day",
    )
    if suite.has_judge:
        gateway.budgets.set_cap(
            tenant_id=EVAL_TENANT,
            feature_id=f"{spec.feature_id}-judge",
            limit_usd=spec.judge_spend_cap_usd,
            period="day",
        )


async def _retrying(call: Callable[[], Awaitable[_T]], retries: int) -> _T:
    """``call()``, retried on retryable gateway errors and unparseable scores."""
    for attempt in range(retries + 1):
        try:
            return await call()
        except (RetryableError, ScorerError) as exc:
            if attempt == retries:
                raise
            delay = exc.retry_after_s if isinstance(exc, RateLimited) else 0.2 * 2**attempt
            await asyncio.sleep(min(delay, 5.0))
    raise AssertionError("unreachable")


def _weighted(suite: LoadedSuite, scores: dict[str, Score]) -> tuple[float, bool]:
    total = sum(spec.weight for spec, _ in suite.scorers)
    value = sum(spec.weight * scores[spec.metric].score for spec, _ in suite.scorers) / total
    return value, all(s.passed for s in scores.values())


class _Run:
    """State of one run while it executes."""

    def __init__(
        self,
        engine: Engine,
        gateway: Gateway,
        suite: LoadedSuite,
        candidate: Candidate,
        model_group: str,
        semaphore: asyncio.Semaphore,
        use_cache: bool,
    ) -> None:
        self.engine, self.gateway, self.suite = engine, gateway, suite
        self.candidate, self.model_group = candidate, model_group
        self.semaphore, self.use_cache = semaphore, use_cache
        self.cache = OutputCache(engine)
        self.writer = CacheWriter(self.cache)
        self.run_id = new_id("evr")
        self.provider_calls = 0
        self.judge_cost = Decimal(0)
        prompt = candidate.prompt
        self.params = prompt.call_params()
        self.key_params = {**prompt.params, "_call": self.params}

    async def judge(self, messages: list[dict[str, str]], model_group: str) -> str:
        request = ChatRequest(
            tenant_id=EVAL_TENANT,
            feature_id=f"{self.suite.spec.feature_id}-judge",
            messages=messages,
            model_group=model_group,
            max_tokens=256,
            temperature=0.0,
            action_id=self.run_id,
        )
        async with self.semaphore:
            result = await self.gateway.chat(request)
        self.judge_cost += result.cost_usd
        return result.text

    async def output(self, item: DatasetItem, trial: int, cached: EvalOutputCache | None) -> Any:
        if cached is not None:
            return cached, True
        prompt = self.candidate.prompt
        request = ChatRequest(
            tenant_id=EVAL_TENANT,
            feature_id=self.suite.spec.feature_id,
            messages=prompt.render(item.input),
            model_group=self.model_group,
            max_tokens=prompt.params.get("max_tokens"),
            temperature=prompt.params.get("temperature"),
            action_id=self.run_id,
            prompt_name=prompt.name,
            prompt_version=self.candidate.version,
            params=self.params,
        )

        async def call() -> Any:
            async with self.semaphore:
                self.provider_calls += 1
                return await self.gateway.chat(request)

        result = await _retrying(call, self.suite.spec.retries)
        row = EvalOutputCache(
            key=self.key(item, trial),
            prompt_hash=self.candidate.content_hash,
            item_hash=item.hash,
            model_group=self.model_group,
            trial=trial,
            output=result.text,
            request_id=result.request_id,
            cost_usd=result.cost_usd,
            latency_ms=result.latency_ms,
        )
        self.writer.add(row)
        return row, False

    def key(self, item: DatasetItem, trial: int) -> str:
        return output_key(
            self.candidate.content_hash, item.hash, self.model_group, self.key_params, trial
        )

    async def one(
        self, item: DatasetItem, trial: int, cached: EvalOutputCache | None
    ) -> ItemResult:
        result = ItemResult(item.id, trial, tags=item.tags)
        missing = self.candidate.prompt.variables - set(item.input)
        if missing:
            result.status = "unscored"
            result.error = (
                f"{self.suite.dataset_path}:{item.line}: missing variable(s) "
                f"{', '.join(sorted(missing))} for prompt {self.candidate.prompt.name!r}"
            )
            return result
        try:
            row, hit = await self.output(item, trial, cached)
        except (GatewayError, LLMOpsError) as exc:
            result.status, result.error = "unscored", f"call failed: {type(exc).__name__}: {exc}"
            return result
        result.output, result.cached, result.request_id = row.output, hit, row.request_id
        result.cost_usd = Decimal(0) if hit else row.cost_usd
        result.latency_ms = 0 if hit else row.latency_ms
        scores: dict[str, Score] = {}
        for spec, scorer in self.suite.scorers:

            async def score(scorer: Scorer = scorer) -> Score:
                if isinstance(scorer, LlmJudge):  # through this run's gateway and cap
                    return await scorer.grade(self.judge, row.output, item)
                return await scorer.ascore(row.output, item)

            try:
                scores[spec.metric] = await _retrying(score, self.suite.spec.retries)
            except (ScorerError, LLMOpsError) as exc:
                result.status = "unscored"
                result.error = f"scorer {spec.metric}: {exc}"
        result.scores = {m: s.as_dict() for m, s in scores.items()}
        if result.status == "scored":
            result.score, result.passed = _weighted(self.suite, scores)
        return result


def compute_metrics(suite: LoadedSuite, results: list[ItemResult]) -> dict[str, Any]:
    """Per-metric means and pass rates over scored examples, and the unscored list."""
    scored = [r for r in results if r.status == "scored"]
    metrics: dict[str, Any] = {}
    for spec, _ in suite.scorers:
        values = [r.scores[spec.metric] for r in scored]
        n = len(values)
        metrics[spec.metric] = {
            "mean": sum(v["score"] for v in values) / n if n else None,
            "pass_rate": sum(1 for v in values if v["passed"]) / n if n else None,
            "n": n,
            "threshold": spec.threshold,
        }
    n = len(scored)
    return {
        "metrics": metrics,
        "score": sum(r.score for r in scored) / n if n else None,
        "pass_rate": sum(1 for r in scored if r.passed) / n if n else None,
        "scored": n,
        "unscored": [
            {"item_id": r.item_id, "trial": r.trial, "error": r.error}
            for r in results
            if r.status != "scored"
        ],
    }


def absolute_failures(suite: LoadedSuite, metrics: dict[str, Any], total: int) -> list[str]:
    """Reasons the run fails its absolute thresholds or its unscored allowance."""
    reasons = []
    for spec, _ in suite.scorers:
        mean = metrics["metrics"][spec.metric]["mean"]
        if spec.threshold is not None and (mean is None or mean < spec.threshold):
            shown = "n/a" if mean is None else f"{mean:.3f}"
            reasons.append(f"{spec.metric}: mean {shown} below threshold {spec.threshold:g}")
    unscored = len(metrics["unscored"])
    if total and unscored / total > suite.spec.max_unscored:
        reasons.append(
            f"{unscored} of {total} examples unscored (allowed: {suite.spec.max_unscored:.0%})"
        )
    return reasons


async def run_suite(
    engine: Engine,
    gateway: Gateway,
    suite: LoadedSuite,
    candidate: Candidate,
    *,
    model_group: str | None = None,
    semaphore: asyncio.Semaphore | None = None,
    dataset: Dataset | None = None,
    use_cache: bool = True,
) -> RunResult:
    """Run ``suite`` on ``candidate`` and store the run and its results; returns both."""
    started = time.perf_counter()
    spec = suite.spec
    dataset = dataset or load_dataset(suite.dataset_path)
    group = model_group or candidate.prompt.model_group
    run = _Run(
        engine,
        gateway,
        suite,
        candidate,
        group,
        semaphore or asyncio.Semaphore(spec.concurrency),
        use_cache,
    )
    missing = (suite.model_groups_used() | {group}) - set(gateway.config.model_groups)
    if missing:
        known = ", ".join(sorted(gateway.config.model_groups))
        raise ConfigError(
            str(suite.path),
            "model_groups",
            f"unknown model group {sorted(missing)[0]!r} in the gateway config (known: {known})",
        )
    pairs = [(item, t) for item in dataset.items for t in range(spec.trials)]
    keys = [run.key(item, t) for item, t in pairs]
    cached = await asyncio.to_thread(run.cache.get_many, keys) if use_cache else {}
    row = EvalRun(
        id=run.run_id,
        suite=spec.name,
        prompt_name=candidate.prompt.name,
        prompt_version=candidate.version,
        prompt_hash=candidate.content_hash,
        model_group=group,
        dataset_name=dataset.name,
        dataset_hash=dataset.hash,
        trials=spec.trials,
    )
    await asyncio.to_thread(_save, engine, [row])
    async with run.writer:
        results = list(
            await asyncio.gather(
                *(run.one(item, t, cached.get(k)) for (item, t), k in zip(pairs, keys, strict=True))
            )
        )
    for bad in dataset.bad:
        item_id = bad.item_id or f"line-{bad.line}"
        for t in range(spec.trials):
            results.append(ItemResult(item_id, t, status="unscored", error=str(bad)))
    metrics = compute_metrics(suite, results)
    total = len(dataset.items) + len(dataset.bad)
    failures = absolute_failures(suite, metrics, total * spec.trials)
    metrics["failures"] = failures
    cost = sum((r.cost_usd for r in results), run.judge_cost)
    row.metrics = metrics
    row.passed = not failures
    row.status = "completed"
    row.items_total = total
    row.items_unscored = len({r.item_id for r in results if r.status != "scored"})
    row.provider_calls = run.provider_calls
    row.cost_usd = cost
    row.finished_at = utcnow()
    result_rows = [
        EvalResult(
            run_id=run.run_id,
            item_id=r.item_id,
            trial=r.trial,
            status=r.status,
            error=r.error,
            output=r.output,
            scores=r.scores,
            score=r.score,
            passed=r.passed,
            cached=r.cached,
            request_id=r.request_id,
            cost_usd=r.cost_usd,
            latency_ms=r.latency_ms,
        )
        for r in results
    ]
    await asyncio.to_thread(_save, engine, [row, *result_rows])
    return RunResult(
        run_id=run.run_id,
        suite=spec.name,
        candidate=candidate,
        model_group=group,
        dataset=dataset,
        results=results,
        metrics=metrics,
        provider_calls=run.provider_calls,
        cost_usd=cost,
        wall_s=time.perf_counter() - started,
    )


def _save(engine: Engine, rows: list[Any]) -> None:
    with Session(engine) as session:
        for row in rows:
            session.merge(row)
        session.commit()
