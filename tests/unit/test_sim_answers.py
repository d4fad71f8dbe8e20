"""The simulator answers dataset items (wrong on a nested share per error rate) and judges."""

from __future__ import annotations

import json
from pathlib import Path

from llmops.evals.datasets import DatasetItem
from llmops.evals.judge import judge_messages
from llmops.sim.answers import DatasetAnswers, judge_reply
from llmops.sim.config import Profile

LABELS = ["billing", "bug", "howto", "account"]


def _answers(tmp_path: Path, seed: int = 7) -> DatasetAnswers:
    path = tmp_path / "d.jsonl"
    lines = [
        {"id": f"t{i}", "input": {"ticket": f"[T{i:03d}] problem"}, "expected": LABELS[i % 4]}
        for i in range(200)
    ]
    lines.append(
        {"id": "j", "input": {"doc": "[J] invoice"}, "expected": {"total": 3, "cur": "EUR"}}
    )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    return DatasetAnswers.load([str(tmp_path / "*.jsonl")], seed)


def _ask(answers: DatasetAnswers, text: str, profile: Profile) -> str | None:
    return answers.reply(
        [{"role": "system", "content": "Classify."}, {"role": "user", "content": text}], profile
    )


def test_items_are_answered_and_errors_are_nested_by_rate(tmp_path: Path) -> None:
    answers = _answers(tmp_path)
    perfect = Profile()
    good, bad = Profile(error_rate=0.1), Profile(error_rate=0.3)
    wrong_good, wrong_bad = set(), set()
    for i in range(200):
        text = f"Ticket: [T{i:03d}] problem"
        assert _ask(answers, text, perfect) == LABELS[i % 4]
        if _ask(answers, text, good) != LABELS[i % 4]:
            wrong_good.add(i)
        answer = _ask(answers, text, bad)
        if answer != LABELS[i % 4]:
            wrong_bad.add(i)
            assert answer in LABELS  # a plausible wrong label, not noise
    assert wrong_good < wrong_bad  # a better model errs on a subset
    assert 8 <= len(wrong_good) <= 35 and 40 <= len(wrong_bad) <= 85
    assert _ask(answers, "something unrelated", good) is None


def test_quality_rules_override_the_rate_and_json_answers_stay_json(tmp_path: Path) -> None:
    answers = _answers(tmp_path)
    profile = Profile.model_validate({"quality": [{"match": "(?i)guess", "error_rate": 1.0}]})
    assert _ask(answers, "[T001] problem", profile) == "bug"
    assert _ask(answers, "guess: [T001] problem", profile) != "bug"
    assert json.loads(_ask(answers, "[J] invoice", Profile()) or "") == {"total": 3, "cur": "EUR"}
    wrong = json.loads(_ask(answers, "[J] invoice", Profile(error_rate=1.0)) or "")
    assert wrong != {"total": 3, "cur": "EUR"} and set(wrong) == {"total", "cur"}


def test_another_seed_picks_other_items(tmp_path: Path) -> None:
    a, b = _answers(tmp_path, 1), _answers(tmp_path, 2)
    profile = Profile(error_rate=0.2)
    wrong = [
        {i for i in range(200) if _ask(x, f"[T{i:03d}] problem", profile) != LABELS[i % 4]}
        for x in (a, b)
    ]
    assert wrong[0] != wrong[1]


def test_judge_requests_are_graded_against_the_reference() -> None:
    item = DatasetItem(id="1", input={"ticket": "x"}, expected="bug")
    good = json.loads(judge_reply(judge_messages("same label", item, " Bug ")) or "")
    bad = json.loads(judge_reply(judge_messages("same label", item, "billing")) or "")
    assert (good["score"], bad["score"]) == (1.0, 0.0)
    assert judge_reply([{"role": "user", "content": "hello"}]) is None
