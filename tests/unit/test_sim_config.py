"""Simulator config: loading, defaults, and validation errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmops.errors import ConfigError
from llmops.sim import SimConfig

REPO_CONFIG = Path(__file__).parents[2] / "config" / "sim.yaml"


def test_repo_demo_config_loads_with_the_demo_models() -> None:
    config = SimConfig.load(REPO_CONFIG)
    assert {"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "llama-3.1-8b"} <= set(config.models)
    # At least one model injects errors so the demo shows failover.
    assert any(profile.errors for profile in config.models.values())
    assert config.profile_for("unknown-model") is config.default


def test_load_none_is_zero_latency_and_fault_free() -> None:
    config = SimConfig.load(None)
    assert config.default.ttft_ms.is_zero
    assert config.default.errors == {}
    assert config.default.hang_rate == 0.0
    assert config.models == {}


def test_strict_models_reject_unknown_models() -> None:
    config = SimConfig.model_validate({"strict_models": True, "models": {"a": {}}})
    assert config.profile_for("a") is config.models["a"]
    assert config.profile_for("b") is None


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"models": {"gpt-4o": {"errors": {429: 1.5}}}}, "models.gpt-4o.errors.429", "1"),
        ({"default": {"hang_rate": -0.1}}, "default.hang_rate", "greater than or equal"),
        ({"default": {"latency": 5}}, "default.latency", "Extra inputs"),
        ({"seed": "abc"}, "seed", "integer"),
        ({"default": {"tokens_per_s": "fast"}}, "default.tokens_per_s", "number"),
        ({"default": {"errors": {200: 0.1}}}, "default.errors", "400-599"),
        ({"default": {"errors": {429: 0.7, 500: 0.5}}}, "default", "sum"),
        ({"default": {"ttft_ms": {"dist": "uniform", "min": 5}}}, "default.ttft_ms", "max"),
        ({"default": {"ttft_ms": {"dist": "lognormal", "median": 50}}}, "default.ttft_ms", "p95"),
        (
            {"default": {"responses": [{"match": "(", "reply": "x"}]}},
            "default.responses.0.match",
            "regular",
        ),
        ({"default": {"fail_first": {"n": 1, "status": 200}}}, "default.fail_first.status", "400"),
    ],
)
def test_invalid_config_raises_config_error_naming_field(
    raw: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        SimConfig.model_validate(raw)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("default:\n  cached_tokens_ratio: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        SimConfig.load(path)
    assert caught.value.file == str(path)
    assert caught.value.field == "default.cached_tokens_ratio"


def test_load_rejects_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("default: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        SimConfig.load(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        SimConfig.load(tmp_path / "missing.yaml")


def test_latency_shorthand_and_json_string_status_keys() -> None:
    config = SimConfig.model_validate(
        {"default": {"ttft_ms": 30, "errors": {"429": 0.25}, "retry_after_s": 2}}
    )
    assert config.default.ttft_ms.dist == "fixed"
    assert config.default.ttft_ms.value == 30
    assert config.default.errors == {429: 0.25}
