"""``llmops prompts`` and ``llmops eval`` as a new user runs them (subprocesses, the repo's
prompts/ and evals/, the simulator), plus the CI workflow that runs the gate."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.sim import SimConfig, SimServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    config = {
        "seed": 7,
        "datasets": [str(REPO / "evals" / "datasets" / "*.jsonl")],
        "models": {
            "gpt-4o-mini": {
                "error_rate": 0.1,
                "quality": [{"match": "(?i)\\bguess\\b", "error_rate": 0.4}],
            }
        },
    }
    with SimServer(SimConfig.model_validate(config)) as server:
        yield server


def _candidate(folder: Path, **changes: Any) -> Path:
    body = yaml.safe_load((REPO / "prompts" / "classify.yaml").read_text())
    body.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "classify.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_push_gate_promote_regress_force_and_rollback(
    tmp_path: Path,
    sim: SimServer,
    cli_env: Callable[[str], dict[str, str]],
    run_llmops: Callable[..., Any],
) -> None:
    env = cli_env(sim.base_url)
    env["LLMOPS_ACTOR"] = "dana"

    pushed = run_llmops(env, "prompts", "push", "-m", "first")
    assert pushed.returncode == 0, pushed.stderr
    assert "classify: v1 (new version" in pushed.stdout

    first = run_llmops(env, "eval", "gate", "--suite", "ticket_triage")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "eval gate PASSED" in first.stdout and "no baseline" in first.stdout
    promoted = run_llmops(env, "prompts", "promote", "classify", "--version", "1")
    assert promoted.returncode == 0, promoted.stderr
    assert "production (unset) -> v1 (gate gate_" in promoted.stdout

    worse = _candidate(
        tmp_path / "cand",
        messages=[
            {
                "role": "system",
                "content": "Pick one word, guess if unsure: billing, bug, howto or account.",
            },
            {"role": "user", "content": "{{ ticket }}"},
        ],
    )
    junit, markdown = tmp_path / "out" / "gate.xml", tmp_path / "out" / "gate.md"
    failed = run_llmops(
        env,
        "eval",
        "gate",
        "--suite",
        "ticket_triage",
        "--candidate",
        str(worse),
        "--junit",
        str(junit),
        "--markdown",
        str(markdown),
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "eval gate FAILED" in failed.stdout and "examples that regressed" in failed.stdout
    case = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert case["classify.exact"].find("failure") is not None
    assert case["classify.known_label"].find("failure") is None
    assert "## Eval gate ❌ failed: `ticket_triage`" in markdown.read_text()

    pushed = run_llmops(env, "prompts", "push", "--dir", str(worse.parent), "-m", "worse")
    assert "classify: v2 (new version" in pushed.stdout
    refused = run_llmops(env, "prompts", "promote", "classify", "--version", "2")
    assert refused.returncode == 1 and "no passing eval gate" in refused.stderr
    forced = run_llmops(
        env, "prompts", "promote", "classify", "--version", "2", "--force", "--reason", "hotfix"
    )
    assert forced.returncode == 0 and "FORCED" in forced.stdout
    back = run_llmops(env, "prompts", "rollback", "classify")
    assert back.returncode == 0 and "production v2 -> v1 (rollback)" in back.stdout

    history = run_llmops(env, "prompts", "history", "classify")
    moves = [line for line in history.stdout.splitlines() if "production" in line]
    assert len(moves) == 3
    assert "v2 -> v1" in moves[0] and "rollback from v2" in moves[0]
    assert "v1 -> v2" in moves[1] and "FORCED" in moves[1] and "hotfix" in moves[1]
    assert "- -> v1" in moves[2] and "by dana" in moves[2] and "gate gate_" in moves[2]
    diff = run_llmops(env, "prompts", "diff", "classify", "1", "2")
    assert "-  content: 'Answer with exactly one word" in diff.stdout
    listed = run_llmops(env, "prompts", "list")
    assert "production=v1" in listed.stdout


def test_bad_input_exits_2_with_file_field_and_reason(
    tmp_path: Path,
    sim: SimServer,
    cli_env: Callable[[str], dict[str, str]],
    run_llmops: Callable[..., Any],
) -> None:
    env = cli_env(sim.base_url)
    bad = _candidate(tmp_path / "bad", params={"temperature": 5})
    result = run_llmops(env, "eval", "gate", "--suite", "ticket_triage", "--candidate", str(bad))
    assert result.returncode == 2
    assert f"{bad}: params: temperature: must be a number in [0, 2]" in result.stderr

    unknown = run_llmops(env, "eval", "gate", "--suite", "nope")
    assert unknown.returncode == 2 and "unknown suite 'nope'" in unknown.stderr
    assert "ticket_triage" in unknown.stderr

    suite = tmp_path / "evals" / "suites" / "s.yaml"
    suite.parent.mkdir(parents=True)
    (tmp_path / "evals" / "datasets").mkdir()
    (tmp_path / "evals" / "datasets" / "d.jsonl").write_text('{"id": "1", "input": {}}\n')
    suite.write_text("name: s\nprompt: classify\ndataset: d\nscorers:\n  - name: fuzzy\n")
    bad_suite = run_llmops(env, "eval", "gate", "--suite", str(suite))
    assert bad_suite.returncode == 2
    assert f"{suite}: scorers[0]: unknown scorer 'fuzzy'" in bad_suite.stderr


def test_the_ci_workflow_gates_every_suite_on_prompt_and_eval_changes() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "prompt-gate.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    for event in ("pull_request", "push"):
        assert triggers[event]["paths"] == ["prompts/**", "evals/**"]
    steps = workflow["jobs"]["gate"]["steps"]
    script = next(s["run"] for s in steps if s.get("name", "").startswith("Gate every suite"))
    assert "llmops eval gate --suite" in script and "--junit" in script
    assert "--baseline" in script and 'exit "$worst"' in script
    assert any("uv sync --locked" in s.get("run", "") for s in steps)


def test_a_killed_run_resumes_from_the_cache(
    tmp_path: Path, cli_env: Callable[[str], dict[str, str]], run_llmops: Callable[..., Any]
) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    config = {
        "seed": 7,
        "datasets": [str(REPO / "evals" / "datasets" / "*.jsonl")],
        "default": {"ttft_ms": 150, "tokens_per_s": 0},
    }
    with SimServer(SimConfig.model_validate(config)) as sim:
        env = cli_env(sim.base_url)
        argv = [str(Path(sys.executable).parent / "llmops"), "eval", "run"]
        argv += ["--suite", "ticket_triage", "--candidate", "prompts/classify.yaml"]
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        db = tmp_path / "data" / "ops.db"

        def cached() -> int:
            try:
                with sqlite3.connect(db) as con:
                    return int(con.execute("SELECT count(*) FROM eval_output_cache").fetchone()[0])
            except sqlite3.OperationalError:  # not created yet
                return 0

        deadline = time.monotonic() + 120
        while cached() < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        done = cached()
        assert 5 <= done < 30, done
        calls_before = sim.stats()["total"]

        rerun = run_llmops(
            env, "eval", "run", "--suite", "ticket_triage", "--candidate", "prompts/classify.yaml"
        )
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"{30 - done} provider calls" in rerun.stdout
        assert sim.stats()["total"] - calls_before == 30 - done
        assert cached() == 30
