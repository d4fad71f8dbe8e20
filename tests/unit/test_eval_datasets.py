"""Datasets: bad lines are kept with file, line and reason; content is hashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.errors import ConfigError
from llmops.evals.datasets import load_dataset
from llmops.evals.sample import invert_messages
from llmops.prompts.files import PromptFile

REPO = Path(__file__).resolve().parents[2]


def test_good_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": "a", "input": {"ticket": "x"}, "expected": "bug", "tags": ["t"]}\n'
        "\n"
        "not json\n"
        '{"id": "a", "input": {}}\n'
        '{"id": "b", "input": "text"}\n'
        '{"id": "c", "input": {}, "extra": 1}\n'
        '{"input": {}}\n'
        '{"id": 7, "input": {"ticket": "y"}, "reference": "a reply"}\n'
    )
    data = load_dataset(path)
    assert [i.id for i in data.items] == ["a", "7"]
    assert data.items[1].reference == "a reply" and data.items[0].tags == ("t",)
    reasons = {b.line: b.reason for b in data.bad}
    assert reasons[3].startswith("not JSON")
    assert reasons[4] == "id: duplicate id 'a'"
    assert reasons[5].startswith("input:")
    assert reasons[6].startswith("unknown key 'extra'")
    assert reasons[7].startswith("id:")
    assert str(data.bad[0]) == f"{path}:3: {reasons[3]}"


def test_the_hash_follows_the_content(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "input": {}}\n')
    first = load_dataset(path).hash
    path.write_text('{"id": "a", "input": {"x": "1"}}\n')
    assert load_dataset(path).hash != first


def test_missing_or_empty_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset not found"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="no examples"):
        load_dataset(tmp_path / "e.jsonl")


def test_the_shipped_golden_set_is_clean() -> None:
    data = load_dataset(REPO / "evals" / "datasets" / "ticket_triage.jsonl")
    assert data.bad == [] and len(data.items) >= 30


def test_logged_requests_turn_back_into_variables() -> None:
    prompt = PromptFile.model_validate(
        {
            "name": "p",
            "model_group": "fast",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "From {{ customer }}:\n{{ ticket }}"},
            ],
        }
    )
    rendered = prompt.render({"customer": "Dana", "ticket": "It crashes.\nTwice."})
    assert invert_messages(prompt, rendered) == {
        "customer": "Dana",
        "ticket": "It crashes.\nTwice.",
    }
    other = [{"role": "system", "content": "Other."}, rendered[1]]
    assert invert_messages(prompt, other) is None
