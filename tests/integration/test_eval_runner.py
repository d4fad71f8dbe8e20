"""The eval runner and gate through the gateway core and the simulator, on SQLite and
Postgres: logging as the eval tenant, caching, resume, retries, unscored examples, the
gate's decisions, and promotion behind a passing gate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from llmops.db.models import EvalGate, EvalOutputCache, EvalResult, EvalRun, RequestLog, SpendCap
from llmops.errors import ConfigError, ValidationError
from llmops.evals.gate import run_gate
from llmops.evals.runner import run_suite
from llmops.evals.suites import load_suite
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import Gateway
from llmops.prompts.files import PromptFile
from llmops.prompts.labels import label_events, promote, rollback
from llmops.prompts.refs import PromptRef
from llmops.prompts.store import register_version
from llmops.sim import SimConfig, SimServer

LABELS = ["billing", "bug", "howto", "account"]

GOOD_SYSTEM = "Answer with exactly one word: billing, bug, howto or account."
REWORDED_SYSTEM = "Reply with a single word (billing, bug, howto or account)."
WORSE_SYSTEM = "Answer with one word, guess if unsure: billing, bug, howto or account."

SUITE = """\
name: triage
prompt: classify
dataset: triage
concurrency: 8
retries: {retries}
spend_cap_usd: "5"
seed: {seed}
scorers:
  - name: exact
    threshold: 0.5
    max_drop: 0.02
"""


def write_tree(
    root: Path,
    *,
    n: int = 50,
    tag: str = "",
    retries: int = 2,
    seed: int = 0,
    extra_lines: str = "",
    suite_extra: str = "",
) -> Path:
    """evals/{datasets,suites} under ``root`` (a golden set of n tickets); returns the suite."""
    for sub in ("datasets", "suites", "scorers"):
        (root / "evals" / sub).mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "id": f"{tag}t{i:03d}",
            "input": {"ticket": f"[{tag}T{i:03d}] customer ticket about {LABELS[i % 4]} things"},
            "expected": LABELS[i % 4],
        }
        for i in range(n)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines) + extra_lines
    (root / "evals" / "datasets" / "triage.jsonl").write_text(data)
    suite = root / "evals" / "suites" / "triage.yaml"
    suite.write_text(SUITE.format(retries=retries, seed=seed) + suite_extra)
    return suite


def sim_config(root: Path, seed: int = 7, **models: Any) -> dict[str, Any]:
    """gpt-4o-mini errs on 5% of items, 20% when asked to guess: a planted 15-point drop."""
    return {
        "seed": seed,
        "datasets": [str(root / "evals" / "datasets" / "*.jsonl")],
        "models": {
            "gpt-4o-mini": {
                "error_rate": 0.05,
                "quality": [{"match": "(?i)\\bguess\\b", "error_rate": 0.20}],
            },
            **models,
        },
    }


def gateway_config(base_url: str, **groups: str) -> GatewayConfig:
    """Group ``fast`` (gpt-4o-mini) plus ``name=model`` groups, all priced, no retries."""

    def group(dep_id: str, model: str) -> dict[str, Any]:
        dep = {"id": dep_id, "model": f"openai/{model}", "api_base": base_url, "api_key": "sk"}
        return {"deployments": [dep]}

    models = {"fast": "gpt-4o-mini", **groups}
    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 10, "num_retries": 0},
            "model_groups": {name: group(f"sim-{name}", m) for name, m in models.items()},
            "prices": [
                {"model": f"openai/{m}", "input_per_mtok": "0.15", "output_per_mtok": "0.60"}
                for m in sorted(set(models.values()))
            ],
        }
    )


MakeGateway = Callable[..., Gateway]


def _prompt(system: str) -> PromptFile:
    return PromptFile.model_validate(
        {
            "name": "classify",
            "model_group": "fast",
            "params": {"temperature": 0, "max_tokens": 8},
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "{{ ticket }}"},
            ],
        }
    )


def _store(engine: Engine, system: str, *, production: bool = False) -> PromptRef:
    prompt = _prompt(system)
    with Session(engine) as session:
        version = register_version(session, prompt, author="test").version
        if production:
            promote(session, "classify", version, actor="test", force=True, reason="seed")
        session.commit()
    return PromptRef(prompt, version, f"v{version}")


def _file(system: str) -> PromptRef:
    return PromptRef(_prompt(system), None, "file")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_tree(tmp_path)
    return tmp_path


@pytest.fixture
def sim(tree: Path) -> Any:
    with SimServer(SimConfig.model_validate(sim_config(tree))) as server:
        yield server


async def test_a_run_logs_every_call_as_the_eval_tenant_and_a_rerun_calls_nothing(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path, sim: SimServer
) -> None:
    suite = load_suite(tree / "evals" / "suites" / "triage.yaml")
    ref = _store(db_engine, GOOD_SYSTEM)
    gateway = make_gateway(gateway_config(sim.base_url))
    first = await run_gate(db_engine, gateway, suite, ref, None, actor="ci")
    await gateway.flush()
    assert first.provider_calls == 50 and first.cached_outputs == 0
    assert sim.stats()["total"] == 50
    exact = first.metrics[0]
    assert exact.candidate_mean is not None and 0.85 <= exact.candidate_mean < 1.0
    with Session(db_engine) as session:
        rows = session.exec(select(RequestLog)).all()
        assert len(rows) == 50
        assert {(r.tenant_id, r.feature_id, r.prompt_name, r.prompt_version) for r in rows} == {
            ("eval", "eval-triage", "classify", ref.version)
        }
        cap = session.exec(select(SpendCap).where(SpendCap.tenant_id == "eval")).one()
        assert (cap.feature_id, cap.period, cap.limit_usd) == ("eval-triage", "day", Decimal(5))
        run = session.get(EvalRun, first.candidate_run_id)
        assert run is not None and run.provider_calls == 50 and run.items_unscored == 0
        assert run.prompt_hash == ref.content_hash and run.passed is True
        assert len(session.exec(select(EvalResult).where(EvalResult.run_id == run.id)).all()) == 50

    again = await run_gate(db_engine, gateway, suite, ref, None, actor="ci")
    assert again.provider_calls == 0 and again.cached_outputs == 50
    assert sim.stats()["total"] == 50  # no provider call at all
    assert again.metrics[0].candidate_mean == exact.candidate_mean


async def test_identical_versions_pass_the_gate_across_20_seeds(
    db_engine: Engine, make_gateway: MakeGateway, tmp_path: Path, sim: SimServer
) -> None:
    gateway = make_gateway(gateway_config(sim.base_url))
    baseline = _store(db_engine, GOOD_SYSTEM, production=True)
    for seed in range(20):
        # A fresh golden set and simulator seed each time: other items come out wrong.
        root = tmp_path / f"seed{seed}"
        suite_path = write_tree(root, n=30, tag=f"s{seed}", seed=seed)
        sim.configure(sim_config(root, seed=seed))
        suite = load_suite(suite_path)
        report = await run_gate(db_engine, gateway, suite, _file(GOOD_SYSTEM), baseline)
        assert report.passed, (seed, report.reasons)
        assert report.pairs == 30 and report.regressions == []


async def test_a_planted_15_point_drop_fails_and_an_equal_quality_change_passes(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path, sim: SimServer
) -> None:
    suite = load_suite(tree / "evals" / "suites" / "triage.yaml")
    gateway = make_gateway(gateway_config(sim.base_url))
    baseline = _store(db_engine, GOOD_SYSTEM, production=True)

    worse = await run_gate(db_engine, gateway, suite, _file(WORSE_SYSTEM), baseline)
    assert not worse.passed
    exact = worse.metrics[0]
    assert exact.regressed and exact.ci is not None
    assert exact.ci.drop > 0.1 and exact.ci.drop_low > 0.02
    assert len(worse.regressions) >= 5
    assert all(r["candidate"] < r["baseline"] for r in worse.regressions)

    same = await run_gate(db_engine, gateway, suite, _file(REWORDED_SYSTEM), baseline)
    assert same.passed, same.reasons
    assert same.metrics[0].ci is not None and same.metrics[0].ci.mean == 0.0

    with Session(db_engine) as session:
        gates = session.exec(select(EvalGate).order_by(col(EvalGate.created_at))).all()
        assert [g.passed for g in gates] == [False, True]
        assert gates[0].report is not None and gates[0].report["reasons"]


async def test_promotion_needs_a_passing_gate_for_that_exact_version(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path, sim: SimServer
) -> None:
    suite = load_suite(tree / "evals" / "suites" / "triage.yaml")
    gateway = make_gateway(gateway_config(sim.base_url))
    v1 = _store(db_engine, GOOD_SYSTEM, production=True)
    # Gate the files first (as CI does on a pull request), push afterwards.
    good = await run_gate(db_engine, gateway, suite, _file(REWORDED_SYSTEM), v1, actor="ci")
    bad = await run_gate(db_engine, gateway, suite, _file(WORSE_SYSTEM), v1, actor="ci")
    assert good.passed and not bad.passed
    v2 = _store(db_engine, REWORDED_SYSTEM)
    v3 = _store(db_engine, WORSE_SYSTEM)
    with Session(db_engine) as session:
        with pytest.raises(ValidationError, match="no passing eval gate"):
            promote(session, "classify", v3.version or 0, actor="dana")
        event = promote(session, "classify", v2.version or 0, actor="dana")
        assert (event.from_version, event.to_version, event.eval_run_id) == (1, 2, good.gate_id)
        forced = promote(session, "classify", v3.version or 0, actor="lee", force=True)
        assert forced.forced and forced.eval_run_id is None
        back = rollback(session, "classify", actor="lee", reason="bad answers")
        assert (back.from_version, back.to_version) == (3, 2)
        session.commit()
        trail = [
            (e.from_version, e.to_version, e.actor, e.forced)
            for e in label_events(session, "classify")
        ]
    assert trail == [
        (3, 2, "lee", False),
        (2, 3, "lee", True),
        (1, 2, "dana", False),
        (None, 1, "test", True),
    ]


async def test_provider_errors_are_retried_then_counted_unscored_never_passed(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path, sim: SimServer
) -> None:
    config = sim_config(tree)
    config["models"]["gpt-4o-mini"]["fail_first"] = {"n": 10, "status": 503}
    config["models"]["broken"] = {"errors": {503: 1.0}}
    sim.configure(config)
    gateway = make_gateway(gateway_config(sim.base_url, broken="broken"))
    suite = load_suite(tree / "evals" / "suites" / "triage.yaml")
    ref = _file(GOOD_SYSTEM)

    flaky = await run_suite(db_engine, gateway, suite, ref)
    assert flaky.unscored == [] and flaky.provider_calls == 60  # 10 failures, retried

    down = await run_suite(db_engine, gateway, suite, ref, model_group="broken")
    assert len(down.unscored) == 50 and down.provider_calls == 150  # 1 + 2 retries each
    assert all("RetryableError" in (r.error or "") for r in down.unscored)
    assert all(not r.passed for r in down.results)
    assert down.metrics["scored"] == 0 and down.metrics["score"] is None
    assert any("50 of 50 examples unscored" in f for f in down.metrics["failures"])
    with Session(db_engine) as session:
        statuses = session.exec(
            select(EvalResult.status, func.count())
            .where(EvalResult.run_id == down.run_id)
            .group_by(EvalResult.status)
        ).all()
        assert statuses == [("unscored", 50)]
        assert session.get(EvalRun, down.run_id).passed is False  # type: ignore[union-attr]


async def test_unparseable_judge_replies_are_retried_then_unscored(
    db_engine: Engine, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    judge = (
        "  - name: llm_judge\n    id: judge\n"
        "    params: {model_group: judge, rubric: Same label.}\n"
    )
    suite_path = write_tree(tmp_path, n=10, retries=1, suite_extra=judge)
    config = sim_config(
        tmp_path, judge={"responses": [{"match": ".", "reply": "Looks fine to me"}]}, honest={}
    )
    with SimServer(SimConfig.model_validate(config)) as sim:
        gateway = make_gateway(gateway_config(sim.base_url, judge="judge", honest="honest"))
        suite = load_suite(suite_path)
        run = await run_suite(db_engine, gateway, suite, _file(GOOD_SYSTEM))
        stats = sim.stats()["models"]
        assert stats["judge"]["requests"] == 20  # 10 items x (1 + 1 retry)
        assert len(run.unscored) == 10
        assert all("judge reply is not JSON" in (r.error or "") for r in run.unscored)
        assert all("exact" in r.scores for r in run.unscored)  # other scores are kept

        # The same suite with a judge that answers properly scores everything.
        honest = judge.replace("model_group: judge", "model_group: honest")
        suite_path.write_text(suite_path.read_text().replace(judge, honest))
        graded = await run_suite(db_engine, gateway, load_suite(suite_path), _file(GOOD_SYSTEM))
        assert graded.unscored == [] and graded.provider_calls == 0  # outputs from the cache
        assert (
            graded.metrics["metrics"]["judge"]["mean"] == graded.metrics["metrics"]["exact"]["mean"]
        )
    with Session(db_engine) as session:
        judged = session.exec(
            select(RequestLog.feature_id, func.count())
            .group_by(RequestLog.feature_id)
            .order_by(RequestLog.feature_id)
        ).all()
    assert judged == [("eval-triage", 10), ("eval-triage-judge", 30)]


# Cancelling mid-call can catch LiteLLM between creating its provider coroutine and
# awaiting it; Python then warns that coroutine was never awaited (LiteLLM's, not ours).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:coroutine 'OpenAIChatCompletion.acompletion':RuntimeWarning")
async def test_an_interrupted_run_resumes_from_the_cache(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path, sim: SimServer
) -> None:
    config = sim_config(tree)
    config["models"]["gpt-4o-mini"]["ttft_ms"] = 200  # slow enough to cancel midway, even loaded
    sim.configure(config)
    gateway = make_gateway(gateway_config(sim.base_url))
    suite = load_suite(tree / "evals" / "suites" / "triage.yaml")
    ref = _file(GOOD_SYSTEM)

    def cached() -> int:
        with Session(db_engine) as session:
            return session.exec(select(func.count()).select_from(EvalOutputCache)).one()

    task = asyncio.create_task(run_suite(db_engine, gateway, suite, ref))
    while cached() < 15:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = cached()
    assert 15 <= done < 50
    resumed = await run_suite(db_engine, gateway, suite, ref)
    assert resumed.provider_calls == 50 - done
    assert sum(1 for r in resumed.results if r.cached) == done
    assert resumed.unscored == [] and cached() == 50


async def test_bad_dataset_lines_and_missing_variables_are_recorded_not_dropped(
    db_engine: Engine, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    extra = 'this is not json\n{"id": "no-vars", "input": {"text": "hi"}, "expected": "bug"}\n'
    suite_path = write_tree(tmp_path, n=5, extra_lines=extra)
    with SimServer(SimConfig.model_validate(sim_config(tmp_path))) as sim:
        gateway = make_gateway(gateway_config(sim.base_url))
        run = await run_suite(db_engine, gateway, load_suite(suite_path), _file(GOOD_SYSTEM))
    dataset = tmp_path / "evals" / "datasets" / "triage.jsonl"
    errors = {r.item_id: r.error for r in run.unscored}
    assert errors["line-6"] is not None and errors["line-6"].startswith(f"{dataset}:6: not JSON")
    assert errors["no-vars"] == (f"{dataset}:7: missing variable(s) ticket for prompt 'classify'")
    assert run.provider_calls == 5 and len(run.results) == 7
    assert any("2 of 7 examples unscored" in f for f in run.metrics["failures"])
    with Session(db_engine) as session:
        stored = session.get(EvalRun, run.run_id)
        assert stored is not None and (stored.items_total, stored.items_unscored) == (7, 2)


async def test_a_suite_over_two_model_groups_gates_each_and_fails_if_either_regresses(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path
) -> None:
    # Same good prompt on two models; the candidate asks to guess, which only the weaker
    # model takes badly: the gate names the group that regressed.
    config = sim_config(tree, sturdy={"error_rate": 0.05})
    suite_path = tree / "evals" / "suites" / "triage.yaml"
    suite_path.write_text(suite_path.read_text() + "model_groups: [fast, sturdy]\n")
    with SimServer(SimConfig.model_validate(config)) as sim:
        gateway = make_gateway(gateway_config(sim.base_url, sturdy="sturdy"))
        baseline = _store(db_engine, GOOD_SYSTEM, production=True)
        report = await run_gate(
            db_engine, gateway, load_suite(suite_path), _file(WORSE_SYSTEM), baseline
        )
    assert [m.metric for m in report.metrics] == ["exact@fast", "exact@sturdy"]
    assert [m.regressed for m in report.metrics] == [True, False]
    assert report.reasons and all(r.startswith("[fast] exact:") for r in report.reasons)
    assert report.model_group == "fast, sturdy" and report.pairs == 100
    assert all(r["item_id"].endswith("@fast") for r in report.regressions)
    with Session(db_engine) as session:
        runs = session.exec(select(EvalRun).where(col(EvalRun.baseline_run_id).is_not(None))).all()
        assert sorted(r.model_group for r in runs) == ["fast", "sturdy"]
        assert session.get(EvalGate, report.gate_id).passed is False  # type: ignore[union-attr]


async def test_structured_output_scored_by_schema_and_fields(
    db_engine: Engine, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    schema = {
        "type": "object",
        "properties": {"queue": {"type": "string"}, "priority": {"type": "integer"}},
        "required": ["queue", "priority"],
    }
    evals = tmp_path / "evals"
    for sub in ("datasets", "suites"):
        (evals / sub).mkdir(parents=True)
    lines = [
        {
            "id": f"x{i}",
            "input": {"ticket": f"[X{i:02d}] the app is down"},
            "expected": {"queue": LABELS[i % 4], "priority": i % 3},
        }
        for i in range(20)
    ]
    (evals / "datasets" / "extract.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (evals / "suites" / "extract.yaml").write_text(
        "name: extract\nprompt: extract\ndataset: extract\nscorers:\n"
        "  - {name: json_valid, threshold: 1.0}\n"
        f"  - {{name: json_schema, params: {{schema: {json.dumps(schema)}}}}}\n"
        "  - {name: json_match, weight: 2, threshold: 0.8}\n"
    )
    prompt = PromptFile.model_validate(
        {
            "name": "extract",
            "model_group": "fast",
            "params": {"temperature": 0, "max_tokens": 40, "json_schema": schema},
            "messages": [{"role": "user", "content": "Extract queue and priority: {{ ticket }}"}],
        }
    )
    config = {
        "seed": 2,
        "datasets": [str(evals / "datasets" / "*.jsonl")],
        "models": {"gpt-4o-mini": {"error_rate": 0.25}},
    }
    with SimServer(SimConfig.model_validate(config)) as sim:
        gateway = make_gateway(gateway_config(sim.base_url))
        run = await run_suite(
            db_engine,
            gateway,
            load_suite(evals / "suites" / "extract.yaml"),
            PromptRef(prompt, None, "file"),
        )
    metrics = run.metrics["metrics"]
    assert metrics["json_valid"]["mean"] == 1.0 and metrics["json_schema"]["mean"] == 1.0
    wrong = [r for r in run.results if not r.scores["json_match"]["passed"]]
    assert 2 <= len(wrong) <= 10  # the simulator's 25% error rate, one field off each
    assert all(r.scores["json_match"]["score"] == 0.5 for r in wrong)
    assert metrics["json_match"]["mean"] == pytest.approx(1 - 0.5 * len(wrong) / 20)


async def test_a_suite_naming_an_unknown_model_group_fails_before_any_call(
    db_engine: Engine, make_gateway: MakeGateway, tree: Path, sim: SimServer
) -> None:
    suite_path = tree / "evals" / "suites" / "triage.yaml"
    judge = "  - {name: llm_judge, params: {model_group: grader, rubric: Same.}}\n"
    suite_path.write_text(suite_path.read_text() + judge)
    gateway = make_gateway(gateway_config(sim.base_url))
    with pytest.raises(ConfigError) as info:
        await run_suite(db_engine, gateway, load_suite(suite_path), _file(GOOD_SYSTEM))
    assert info.value.file == str(suite_path)
    assert "unknown model group 'grader'" in info.value.reason
    assert sim.stats()["total"] == 0
