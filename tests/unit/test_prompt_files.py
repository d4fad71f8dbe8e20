"""Prompt files: validation, strict rendering, content hash, and the real ``prompts/`` folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.errors import ConfigError, ValidationError
from llmops.prompts.files import PromptFile, load_prompt, load_prompts

REPO = Path(__file__).resolve().parents[2]

SUMMARIZE = """\
name: summarize
description: Summarize a ticket.
owner: support
model_group: fast
params:
  temperature: 0.2
  max_tokens: 120
messages:
  - role: system
    content: You summarize tickets for {{ team }}.
  - role: user
    content: |
      Ticket from {{ customer }}:
      {{ ticket }}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _variables(**overrides: str) -> dict[str, str]:
    return {"team": "billing", "customer": "Dana", "ticket": "Charged twice.", **overrides}


def test_render_fills_every_variable(tmp_path: Path) -> None:
    prompt = load_prompt(_write(tmp_path, "summarize", SUMMARIZE))
    assert prompt.variables == {"team", "customer", "ticket"}
    assert prompt.render(_variables()) == [
        {"role": "system", "content": "You summarize tickets for billing."},
        {"role": "user", "content": "Ticket from Dana:\nCharged twice.\n"},
    ]


def test_render_does_not_html_escape_and_ignores_extra_variables(tmp_path: Path) -> None:
    prompt = load_prompt(_write(tmp_path, "summarize", SUMMARIZE))
    messages = prompt.render(_variables(ticket="<b>R&D</b> said \"hi\" 'there'", unused="x"))
    assert messages[1]["content"] == "Ticket from Dana:\n<b>R&D</b> said \"hi\" 'there'\n"


def test_missing_variable_raises_validation_error_naming_it(tmp_path: Path) -> None:
    prompt = load_prompt(_write(tmp_path, "summarize", SUMMARIZE))
    variables = _variables()
    del variables["customer"]
    del variables["team"]
    with pytest.raises(ValidationError, match=r"summarize.*customer, team"):
        prompt.render(variables)


def test_variables_defined_inside_the_template_are_not_required(tmp_path: Path) -> None:
    text = SUMMARIZE.replace(
        "You summarize tickets for {{ team }}.",
        "\"{% for tag in tags %}[{{ tag }}]{% endfor %}{% set who = 'agents' %} for {{ who }}\"",
    )
    prompt = load_prompt(_write(tmp_path, "summarize", text))
    assert prompt.variables == {"tags", "customer", "ticket"}
    rendered = prompt.render({"tags": ["a", "b"], "customer": "Lee", "ticket": "t"})
    assert rendered[0]["content"] == "[a][b] for agents"


def test_name_must_match_the_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "summary", SUMMARIZE)
    with pytest.raises(ConfigError) as info:
        load_prompt(path)
    assert (info.value.file, info.value.field) == (str(path), "name")
    assert "'summary'" in info.value.reason


def test_bad_template_syntax_names_the_message(tmp_path: Path) -> None:
    text = SUMMARIZE.replace("Ticket from {{ customer }}:", "Ticket from {{ customer }:")
    path = _write(tmp_path, "summarize", text)
    with pytest.raises(ConfigError) as info:
        load_prompt(path)
    assert (info.value.file, info.value.field) == (str(path), "messages[1].content")
    assert "template error" in info.value.reason


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("role: system", "role: robot"), "messages[0].role"),
        (("owner: support", "ownr: support"), "ownr"),
        (("model_group: fast", "model_grup: fast"), "model_group"),
        (("name: summarize", "name: Summarize Tickets"), "name"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, change: tuple[str, str], field: str) -> None:
    path = _write(tmp_path, "summarize", SUMMARIZE.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_prompt(path)
    assert info.value.field == field


def test_content_hash_is_stable_and_tracks_behaviour(tmp_path: Path) -> None:
    first = load_prompt(_write(tmp_path, "summarize", SUMMARIZE))
    again = load_prompt(_write(tmp_path, "summarize", SUMMARIZE))
    assert first.content_hash == again.content_hash
    assert len(first.content_hash) == 64
    int(first.content_hash, 16)

    # Key order in the file does not matter, only content.
    data = yaml.safe_load(SUMMARIZE)
    reordered = PromptFile.model_validate(dict(reversed(list(data.items()))))
    assert reordered.content_hash == first.content_hash

    docs_only = SUMMARIZE.replace("Summarize a ticket.", "Summarizes tickets.").replace(
        "owner: support", "owner: someone-else"
    )
    assert load_prompt(_write(tmp_path, "summarize", docs_only)).content_hash == (
        first.content_hash
    )

    for changed in (
        SUMMARIZE.replace("You summarize", "You briefly summarize"),
        SUMMARIZE.replace("role: system", "role: user"),
        SUMMARIZE.replace("model_group: fast", "model_group: smart"),
        SUMMARIZE.replace("temperature: 0.2", "temperature: 0.3"),
    ):
        other = load_prompt(_write(tmp_path, "summarize", changed))
        assert other.content_hash != first.content_hash


def test_real_prompts_folder_loads_and_renders() -> None:
    prompts = load_prompts(REPO / "prompts")
    assert {"summarize", "classify", "draft_reply"} <= set(prompts)
    for name, prompt in prompts.items():
        assert prompt.name == name
        assert prompt.model_group in {"fast", "smart", "open"}
        messages = prompt.render(dict.fromkeys(prompt.variables, "value"))
        assert [m["role"] for m in messages] == [m.role for m in prompt.messages]
        assert all("{{" not in m["content"] for m in messages)
    assert prompts["summarize"].variables == {"customer", "ticket"}
    assert prompts["classify"].variables == {"ticket"}
    assert prompts["draft_reply"].variables == {"customer", "ticket"}


def test_load_prompts_keys_by_file_name(tmp_path: Path) -> None:
    _write(tmp_path, "summarize", SUMMARIZE)
    _write(tmp_path, "classify", SUMMARIZE.replace("name: summarize", "name: classify"))
    (tmp_path / "notes.txt").write_text("not a prompt", encoding="utf-8")
    assert sorted(load_prompts(tmp_path)) == ["classify", "summarize"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"temperature": 3}, "temperature: must be a number in [0, 2]"),
        ({"max_tokens": 0}, "max_tokens: must be a positive integer"),
        ({"top_k": 5}, "unknown parameter 'top_k'"),
        ({"json_schema": {"type": "nope"}}, "json_schema: not a valid JSON Schema"),
        ({"response_format": "json"}, "response_format: must be a mapping"),
    ],
)
def test_bad_params_name_the_file_field_and_reason(
    tmp_path: Path, params: dict[str, object], reason: str
) -> None:
    body = yaml.safe_load(SUMMARIZE)
    body["params"] = params
    path = tmp_path / "summarize.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as info:
        load_prompt(path)
    assert info.value.file == str(path)
    assert info.value.field == "params"
    assert reason in info.value.reason


def test_a_json_schema_becomes_a_response_format() -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    body = yaml.safe_load(SUMMARIZE)
    body["params"] = {"temperature": 0, "max_tokens": 50, "json_schema": schema}
    prompt = PromptFile.model_validate(body)
    assert prompt.call_params() == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "summarize", "schema": schema},
        }
    }
