"""``config/gateway.yaml``: model groups, deployments, fallbacks, price book, and its errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.errors import ConfigError
from llmops.gateway.config import GatewayConfig, load_gateway_config
from llmops.gateway.pricebook import Usage

REPO = Path(__file__).resolve().parents[2]
REAL_CONFIG = REPO / "config" / "gateway.yaml"

BASE: dict[str, Any] = {
    "settings": {"timeout_s": 10, "num_retries": 0},
    "model_groups": {
        "fast": {
            "deployments": [
                {"id": "mini", "model": "openai/gpt-4o-mini", "api_base": "http://sim/v1"}
            ],
            "fallbacks": ["open"],
        },
        "open": {"deployments": [{"id": "llama", "model": "openai/llama"}]},
    },
    "prices": [
        {
            "model": "openai/gpt-4o-mini",
            "effective_from": "2024-07-18",
            "input_per_mtok": "0.15",
            "output_per_mtok": "0.60",
        },
        {"model": "openai/llama", "free": True},
    ],
}


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "gateway.yaml"
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def _config_error(tmp_path: Path, data: dict[str, Any] | str) -> ConfigError:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    assert info.value.file == str(path)
    return info.value


def _base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def test_real_gateway_config_loads_with_defaults_and_is_fully_priced() -> None:
    config = load_gateway_config(REAL_CONFIG, env={})
    assert set(config.model_groups) == {"fast", "smart", "open"}
    assert config.model_groups["fast"].fallbacks == ["open"]
    assert config.model_groups["smart"].fallbacks == ["fast"]
    fast = config.model_groups["fast"].deployments[0]
    assert fast.api_base == "http://127.0.0.1:8900/v1"
    assert fast.api_key == "sk-sim"
    book = config.price_book()
    now = datetime(2025, 6, 1, tzinfo=UTC)
    for group in config.model_groups.values():
        for dep in group.deployments:
            book.price_for(dep.price_model, now)  # raises PricingError if unpriced
    haiku = config.deployment("sim-claude-haiku")
    assert haiku is not None and haiku.price_model == "anthropic/claude-3-5-haiku"
    assert config.deployment("no-such-deployment") is None


def test_real_gateway_config_takes_urls_and_keys_from_the_environment() -> None:
    env = {"LLMOPS_SIM_URL": "http://10.1.2.3:9000/v1", "OPENAI_API_KEY": "sk-real"}
    config = load_gateway_config(REAL_CONFIG, env=env)
    fast = config.model_groups["fast"].deployments[0]
    assert (fast.api_base, fast.api_key) == ("http://10.1.2.3:9000/v1", "sk-real")
    # The self-hosted group's key is a literal, not read from the environment.
    assert config.model_groups["open"].deployments[0].api_key == "sk-sim"


def test_a_valid_file_loads_with_its_settings(tmp_path: Path) -> None:
    config = load_gateway_config(_write(tmp_path, _base()), env={})
    assert config.settings.timeout_s == 10
    assert config.settings.num_retries == 0
    dep = config.model_groups["fast"].deployments[0]
    assert (dep.provider, dep.price_model) == ("openai", "openai/gpt-4o-mini")


def test_float_prices_from_yaml_parse_exactly(tmp_path: Path) -> None:
    text = """
model_groups:
  fast:
    deployments: [{id: mini, model: openai/gpt-4o-mini}]
prices:
  - model: openai/gpt-4o-mini
    input_per_mtok: 0.15
    output_per_mtok: 0.6
    cached_input_per_mtok: 0.075
    reasoning_per_mtok: 1.1
"""
    config = load_gateway_config(_write(tmp_path, text), env={})
    price = config.prices[0]
    assert price.input_per_mtok == Decimal("0.15")
    assert str(price.input_per_mtok) == "0.15"  # not 0.1499999999999999944488848768...
    assert price.output_per_mtok == Decimal("0.6")
    assert price.cached_input_per_mtok == Decimal("0.075")
    assert price.reasoning_per_mtok == Decimal("1.1")
    cost, _ = config.price_book().cost(
        "openai/gpt-4o-mini", Usage(input_tokens=1_000_000), datetime(2025, 1, 1, tzinfo=UTC)
    )
    assert cost == Decimal("0.15")


def test_price_defaults_cached_to_input_and_reasoning_to_output() -> None:
    price = (
        GatewayConfig.model_validate(_base())
        .price_book()
        .price_for("openai/gpt-4o-mini", datetime(2025, 1, 1, tzinfo=UTC))
    )
    assert price.cached_input_per_mtok == Decimal("0.15")
    assert price.reasoning_per_mtok == Decimal("0.60")
    assert price.version == "openai/gpt-4o-mini@2024-07-18"


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["fast"]["deployments"][0]["api_bse"] = "http://typo"
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.fast.deployments[0].api_bse"
    assert error.reason == "unknown key"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    data = _base()
    data["price"] = []
    error = _config_error(tmp_path, data)
    assert (error.field, error.reason) == ("price", "unknown key")


def test_bad_timeout_type_names_the_field(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["fast"]["timeout_s"] = "abc"
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.fast.timeout_s"
    assert "number" in error.reason


def test_negative_retry_count_is_refused(tmp_path: Path) -> None:
    data = _base()
    data["settings"]["num_retries"] = -1
    error = _config_error(tmp_path, data)
    assert error.field == "settings.num_retries"


def test_deployment_without_price_names_the_deployment(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["fast"]["deployments"].append(
        {"id": "big", "model": "openai/gpt-4o", "api_base": "http://sim/v1"}
    )
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.fast.deployments[1].model"
    assert "openai/gpt-4o" in error.reason
    assert "no price" in error.reason


def test_price_override_must_itself_be_priced(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["open"]["deployments"][0]["price"] = "meta/llama-unpriced"
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.open.deployments[0].model"
    assert "meta/llama-unpriced" in error.reason


def test_price_entry_needs_both_rates_or_free(tmp_path: Path) -> None:
    data = _base()
    del data["prices"][0]["output_per_mtok"]
    error = _config_error(tmp_path, data)
    assert error.field == "prices[0]"
    assert "output_per_mtok" in error.reason
    assert "free" in error.reason


def test_negative_price_is_refused(tmp_path: Path) -> None:
    data = _base()
    data["prices"][0]["input_per_mtok"] = "-0.15"
    error = _config_error(tmp_path, data)
    assert error.field == "prices[0].input_per_mtok"


def test_unknown_fallback_group(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["fast"]["fallbacks"] = ["open", "smrt"]
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.fast.fallbacks[1]"
    assert "unknown model group" in error.reason
    assert "smrt" in error.reason


def test_group_cannot_fall_back_to_itself(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["open"]["fallbacks"] = ["open"]
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.open.fallbacks[0]"
    assert "itself" in error.reason


def test_duplicate_deployment_id_across_groups(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["open"]["deployments"].append(
        {"id": "mini", "model": "openai/gpt-4o-mini"}
    )
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.open.deployments[1].id"
    assert "'mini'" in error.reason
    assert "twice" in error.reason


def test_missing_env_var_without_default_names_the_field(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["fast"]["deployments"][0]["api_key"] = "${OPENAI_API_KEY}"
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.fast.deployments[0].api_key"
    assert "OPENAI_API_KEY" in error.reason


def test_env_default_and_value(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["fast"]["deployments"][0]["api_base"] = "${SIM_URL:-http://local/v1}"
    path = _write(tmp_path, data)
    default = load_gateway_config(path, env={})
    given = load_gateway_config(path, env={"SIM_URL": "http://remote/v1"})
    assert default.model_groups["fast"].deployments[0].api_base == "http://local/v1"
    assert given.model_groups["fast"].deployments[0].api_base == "http://remote/v1"


def test_at_least_one_group_and_one_deployment(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["open"]["deployments"] = []
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.open.deployments"
    data["model_groups"] = {}
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups"


def test_fallback_cycle_is_refused(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["backup"] = {
        "deployments": [{"id": "mini-2", "model": "openai/gpt-4o-mini"}],
        "fallbacks": ["fast"],
    }
    data["model_groups"]["open"]["fallbacks"] = ["backup"]
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.fast.fallbacks"
    assert "fast -> open -> backup -> fast" in error.reason


def test_chain_of_fallbacks_without_a_cycle_is_fine(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["smart"] = {
        "deployments": [{"id": "mini-2", "model": "openai/gpt-4o-mini"}],
        "fallbacks": ["fast", "open"],
    }
    config = load_gateway_config(_write(tmp_path, data), env={})
    assert config.model_groups["smart"].fallbacks == ["fast", "open"]


def test_context_window_fallback_must_be_a_known_group(tmp_path: Path) -> None:
    data = _base()
    data["model_groups"]["open"]["context_window_fallbacks"] = ["huge"]
    error = _config_error(tmp_path, data)
    assert error.field == "model_groups.open.context_window_fallbacks[0]"
    assert "'huge'" in error.reason


def test_negative_retries_per_error_class_are_refused(tmp_path: Path) -> None:
    data = _base()
    data["settings"]["retries"] = {"rate_limit": -1}
    error = _config_error(tmp_path, data)
    assert error.field == "settings.retries.rate_limit"
