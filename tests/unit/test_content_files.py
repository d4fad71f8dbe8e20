"""The reviewed content the repo ships loads and agrees with itself."""

from __future__ import annotations

import json
from pathlib import Path

from llmops.gateway.config import load_gateway_config
from llmops.prompts.files import load_prompts

REPO = Path(__file__).resolve().parents[2]


def test_every_prompt_targets_a_configured_model_group() -> None:
    groups = load_gateway_config(REPO / "config/gateway.yaml", env={}).model_groups
    prompts = load_prompts(REPO / "prompts")
    assert prompts, "prompts/ must hold the demo prompts"
    for prompt in prompts.values():
        assert prompt.model_group in groups, prompt.name


def test_golden_triage_dataset_is_well_formed_and_renders() -> None:
    prompt = load_prompts(REPO / "prompts")["classify"]
    lines = (REPO / "evals/datasets/ticket_triage.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    assert 30 <= len(items) <= 100
    assert len({item["id"] for item in items}) == len(items)
    assert {item["expected"] for item in items} == {"billing", "bug", "howto", "account"}
    for item in items:
        messages = prompt.render(item["input"])
        assert item["input"]["ticket"] in messages[-1]["content"]
