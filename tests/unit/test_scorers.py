"""Scorers: each returns a score in [0, 1], pass/fail and a reason; bad setups name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.errors import ConfigError
from llmops.evals.datasets import DatasetItem
from llmops.evals.judge import LlmJudge, judge_messages, parse_verdict
from llmops.evals.scorers import BUILTIN, Score, ScorerError, to_score
from llmops.evals.suites import load_suite


def item(expected: object = None, **variables: str) -> DatasetItem:
    return DatasetItem(id="x1", input=variables or {"q": "?"}, expected=expected)


def score(name: str, output: str, expected: object = None, **params: object) -> Score:
    return BUILTIN[name](params).score(output, item(expected))


def test_exact_ignores_case_and_spacing_by_default_and_can_be_strict() -> None:
    assert score("exact", "  Billing \n", "billing") == Score(1.0, True, "exact match")
    strict = score("exact", "Billing", "billing", ignore_case=False)
    assert (strict.score, strict.passed) == (0.0, False)
    assert "expected 'billing'" in strict.reason


def test_contains_scores_the_share_of_wanted_strings() -> None:
    result = score("contains", "refund issued today", ["refund", "apology"])
    assert (result.score, result.passed) == (0.5, False)
    assert "apology" in result.reason
    assert score("contains", "Refund!", "refund").passed


def test_regex_needs_a_valid_pattern() -> None:
    assert score("regex", "order #1234", pattern=r"#\d{4}").passed
    assert not score("regex", "order", pattern=r"#\d{4}").passed
    with pytest.raises(ValueError, match=r"params\.pattern"):
        BUILTIN["regex"]({"pattern": "("})


def test_json_valid_accepts_fenced_json_and_rejects_prose() -> None:
    assert score("json_valid", '```json\n{"a": 1}\n```').passed
    bad = score("json_valid", "sure! here it is")
    assert (bad.score, bad.passed) == (0.0, False)
    assert bad.reason.startswith("not JSON")


def test_json_schema_reports_where_the_output_breaks_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["bug", "billing"]}, "confidence": {"type": "number"}},
        "required": ["label"],
    }
    assert score("json_schema", '{"label": "bug", "confidence": 0.9}', schema=schema).passed
    bad = score("json_schema", '{"label": "spam"}', schema=schema)
    assert not bad.passed and bad.reason.startswith("schema: label:")
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        BUILTIN["json_schema"]({"schema": {"type": "nope"}})


def test_json_match_scores_fields() -> None:
    expected = {"label": "bug", "priority": "high", "team": "web"}
    result = score("json_match", json.dumps({**expected, "priority": "low"}), expected)
    assert result.score == pytest.approx(2 / 3)
    assert not result.passed and "priority" in result.reason
    only = score("json_match", json.dumps({"label": "bug"}), expected, fields=["label"])
    assert only.passed


def test_numeric_tolerance_absolute_and_relative() -> None:
    assert score("numeric", "The total is 41.7 EUR", 42, tolerance=0.5).passed
    assert not score("numeric", "The total is 40", 42, tolerance=0.5).passed
    assert score("numeric", "1010", 1000, rel_tolerance=0.02).passed
    assert score("numeric", "no digits", 3).reason == "no number in the output"
    with pytest.raises(ScorerError):
        score("numeric", "3", "three")


def test_similarity_is_a_ratio_with_a_pass_mark() -> None:
    close = score("similarity", "The export button fails", "the export button fails.")
    assert close.passed and 0.9 < close.score <= 1.0
    far = score("similarity", "hello", "an unrelated sentence", pass_at=0.8)
    assert not far.passed and far.score < 0.5


def test_missing_expected_value_cannot_be_scored() -> None:
    with pytest.raises(ScorerError, match="no expected value"):
        score("exact", "x", None)


def test_custom_return_values_become_scores() -> None:
    assert to_score(True) == Score(1.0, True)
    assert to_score(0.4, pass_at=0.5) == Score(0.4, False)
    assert to_score((0.9, "fine")) == Score(0.9, True, "fine")
    assert to_score({"score": 0.2, "passed": True, "reason": "r"}) == Score(0.2, True, "r")
    with pytest.raises(ScorerError, match="outside"):
        to_score(1.5)
    with pytest.raises(ScorerError, match="not a score"):
        to_score("yes")


def test_judge_verdicts_parse_or_raise() -> None:
    assert parse_verdict('Sure. {"score": 0.75, "reason": "close"}') == (0.75, "close")
    for reply in ["I think it is good", '{"score": "high"}', '{"score": 7}', "{broken"]:
        with pytest.raises(ScorerError):
            parse_verdict(reply)


async def test_judge_sends_rubric_reference_and_output() -> None:
    seen: list[list[dict[str, str]]] = []

    async def call(messages: list[dict[str, str]], group: str) -> str:
        seen.append(messages)
        assert group == "smart"
        return '{"score": 1, "reason": "ok"}'

    judge = LlmJudge({"rubric": "Same queue."}, call)
    result = await judge.ascore("bug", item("bug", ticket="crash"))
    assert result == Score(1.0, True, "ok")
    body = seen[0][1]["content"]
    assert "<rubric>Same queue.</rubric>" in body and "<reference>bug</reference>" in body
    assert judge_messages("r", item("x"), "y")[0]["role"] == "system"
    with pytest.raises(ValueError, match="rubric"):
        LlmJudge({}, call)


def _suite_tree(tmp_path: Path, scorers: str) -> Path:
    (tmp_path / "suites").mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "scorers").mkdir()
    (tmp_path / "datasets" / "d.jsonl").write_text('{"id": "1", "input": {}}\n')
    (tmp_path / "scorers" / "mine.py").write_text(
        "def short(output, item, limit=10):\n    return len(output) <= limit\n"
    )
    path = tmp_path / "suites" / "s.yaml"
    path.write_text(f"name: s\nprompt: p\ndataset: d\nscorers:\n{scorers}")
    return path


def test_a_suite_builds_builtin_and_custom_scorers(tmp_path: Path) -> None:
    path = _suite_tree(
        tmp_path, "  - {name: exact}\n  - {name: mine.short, id: short, params: {limit: 3}}\n"
    )
    suite = load_suite(path)
    assert [spec.metric for spec, _ in suite.scorers] == ["exact", "short"]
    custom = suite.scorers[1][1]
    assert custom.score("abc", item()).passed
    assert not custom.score("abcd", item()).passed


@pytest.mark.parametrize(
    ("scorers", "field", "reason"),
    [
        ("  - {name: fuzzy}\n", "scorers[0]", "unknown scorer 'fuzzy'"),
        ("  - {name: mine.nope}\n", "scorers[0]", "has no function 'nope'"),
        ("  - {name: other.f}\n", "scorers[0]", "no scorer module"),
        ("  - {name: regex}\n", "scorers[0]", "params.pattern"),
        ("  - {name: exact, weight: 0}\n", "scorers[0].weight", "greater than 0"),
        ("  - {name: exact}\n  - {name: exact}\n", "(top level)", "two scorers named"),
    ],
)
def test_bad_suites_name_file_field_and_reason(
    tmp_path: Path, scorers: str, field: str, reason: str
) -> None:
    path = _suite_tree(tmp_path, scorers)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert info.value.file == str(path)
    assert info.value.field == field
    assert reason in info.value.reason


def test_the_shipped_suites_load() -> None:
    root = Path(__file__).resolve().parents[2] / "evals"
    for path in sorted((root / "suites").glob("*.yaml")):
        suite = load_suite(path, root)
        assert suite.dataset_path.is_file()
