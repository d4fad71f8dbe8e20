"""The eval flows on a Prefect test server: nightly runs against production labels, with
results in the ops DB and DuckDB and a markdown artifact per suite; the gate flow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from sqlalchemy import Engine
from sqlmodel import Session, select

from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.db.models import EvalRun
from llmops.prompts.files import PromptFile
from llmops.prompts.labels import promote
from llmops.prompts.store import register_version
from llmops.settings import get_settings
from llmops.sim import SimConfig, SimServer

LABELS = ["billing", "bug", "howto", "account"]


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _prompt(name: str, system: str) -> PromptFile:
    return PromptFile.model_validate(
        {
            "name": name,
            "model_group": "fast",
            "params": {"temperature": 0, "max_tokens": 8},
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "{{ ticket }}"},
            ],
        }
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Iterator[Engine]:
    evals = tmp_path / "evals"
    for sub in ("datasets", "suites"):
        (evals / sub).mkdir(parents=True)
    lines = [
        {"id": f"t{i}", "input": {"ticket": f"[T{i:02d}] issue"}, "expected": LABELS[i % 4]}
        for i in range(20)
    ]
    (evals / "datasets" / "triage.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for name, prompt in (("triage", "classify"), ("orphan", "unlabelled")):
        suite = {
            "name": name,
            "prompt": prompt,
            "dataset": "triage",
            "scorers": [{"name": "exact"}],
        }
        (evals / "suites" / f"{name}.yaml").write_text(yaml.safe_dump(suite))
    sim_config = {
        "seed": 3,
        "datasets": [str(evals / "datasets" / "*.jsonl")],
        "models": {"gpt-4o-mini": {"error_rate": 0.1}},
    }
    with SimServer(SimConfig.model_validate(sim_config)) as sim:
        dep = {"id": "d", "model": "openai/gpt-4o-mini", "api_base": sim.base_url, "api_key": "k"}
        config = {
            "settings": {"timeout_s": 5, "num_retries": 0},
            "model_groups": {"fast": {"deployments": [dep]}},
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}
            ],
        }
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
        db_url = f"sqlite:///{tmp_path / 'ops.db'}"
        monkeypatch.setenv("LLMOPS_DATABASE_URL", db_url)
        monkeypatch.setenv("LLMOPS_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
        monkeypatch.setenv("LLMOPS_GATEWAY_CONFIG", str(tmp_path / "gateway.yaml"))
        monkeypatch.setenv("LLMOPS_EVALS_DIR", str(evals))
        get_settings.cache_clear()
        upgrade(db_url)
        engine = make_engine(db_url)
        with Session(engine) as session:
            for system in ("Answer with one word.", "Answer with exactly one word."):
                version = register_version(session, _prompt("classify", system)).version
            register_version(session, _prompt("unlabelled", "Answer."))
            promote(session, "classify", version, actor="test", force=True)
            session.commit()
        yield engine
        engine.dispose()
    get_settings.cache_clear()


async def test_nightly_runs_every_suite_on_production_and_records_trends(env: Engine) -> None:
    from prefect.client.orchestration import get_client

    from flows.evals import evals_nightly

    first = await evals_nightly()
    again = await evals_nightly()
    by_suite = {s["suite"]: s for s in first}
    assert "no label 'production'" in by_suite["orphan"]["skipped"]
    (run,) = by_suite["triage"]["runs"]
    assert (run["version"], run["model_group"], run["provider_calls"]) == (2, "fast", 20)
    assert 0.8 <= run["score"] < 1.0
    # Nightly calls the models afresh (live models drift) and gets the same answers here.
    (rerun,) = {s["suite"]: s for s in again}["triage"]["runs"]
    assert rerun["provider_calls"] == 20 and rerun["score"] == run["score"]

    with Session(env) as session:
        runs = session.exec(select(EvalRun).where(EvalRun.suite == "triage")).all()
        assert [(r.prompt_version, r.status) for r in runs] == [(2, "completed")] * 2
    con = duckdb.connect(get_settings().resolved_warehouse_path.as_posix(), read_only=True)
    try:
        rows = con.execute(
            "SELECT prompt_version, model_group, count(*), min(score) FROM eval_runs GROUP BY ALL"
        ).fetchall()
        results = con.execute("SELECT count(*) FROM eval_results").fetchone()
    finally:
        con.close()
    assert rows == [(2, "fast", 2, run["score"])]
    assert results == (40,)

    async with get_client() as client:
        artifacts = await client.read_artifacts()
    triage = [a for a in artifacts if a.key == "eval-triage"]
    assert triage and "| exact |" in str(triage[0].data)
    assert "Trend of `triage`" in str(triage[0].data)


async def test_the_gate_flow_reports_and_records_its_decision(env: Engine) -> None:
    from flows.evals import eval_gate

    result = await eval_gate("triage", candidate="1", baseline="production")
    # v1 and v2 are worded differently but equally good: the gate passes and is recorded.
    assert result["passed"] is True and result["reasons"] == []
    assert result["gate_id"].startswith("gate_")
