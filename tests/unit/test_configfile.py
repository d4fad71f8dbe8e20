"""Reviewed YAML config files: ``${VAR}`` interpolation and errors naming file, field, reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from llmops.configfile import load_yaml_model
from llmops.errors import ConfigError


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    key: str | None = None
    timeout_s: float = 30.0


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    endpoints: list[Endpoint] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_yaml_model(path, Service, env=env if env is not None else {})
    return info.value


def test_variables_are_interpolated_from_the_given_env(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: svc\n"
        "endpoints:\n"
        "  - url: http://${HOST}:${PORT}/v1\n"
        "    key: ${KEY}\n"
        "    timeout_s: ${TIMEOUT}\n",
    )
    env = {"HOST": "10.0.0.5", "PORT": "8080", "KEY": "sk-abc", "TIMEOUT": "2.5"}
    service = load_yaml_model(path, Service, env=env)
    (endpoint,) = service.endpoints
    assert endpoint.url == "http://10.0.0.5:8080/v1"
    assert endpoint.key == "sk-abc"
    assert endpoint.timeout_s == 2.5  # an interpolated string still validates as its type


def test_default_applies_only_when_the_variable_is_missing(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: ${NAME:-fallback-name}\ntags:\n  key: ${KEY:-}\n")
    assert load_yaml_model(path, Service, env={}).name == "fallback-name"
    assert load_yaml_model(path, Service, env={}).tags == {"key": ""}
    assert load_yaml_model(path, Service, env={"NAME": "given"}).name == "given"


def test_default_applies_when_the_variable_is_set_but_empty(tmp_path: Path) -> None:
    # ${VAR:-default} means "unset or empty" in POSIX shells, docker compose and
    # .env files; an empty OPENAI_API_KEY= line must not silently blank the key.
    path = _write(tmp_path, "name: ${NAME:-fallback-name}\n")
    assert load_yaml_model(path, Service, env={"NAME": ""}).name == "fallback-name"


def test_process_environment_is_used_when_no_env_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_TEST_SERVICE_NAME", "from-os-environ")
    path = _write(tmp_path, "name: ${LLMOPS_TEST_SERVICE_NAME}\n")
    assert load_yaml_model(path, Service).name == "from-os-environ"


def test_missing_variable_without_default_names_the_field_and_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: svc\nendpoints:\n  - url: http://x\n    key: ${SECRET_KEY}\n")
    error = _error(path)
    assert error.file == str(path)
    assert error.field == "endpoints[0].key"
    assert "SECRET_KEY" in error.reason
    assert "not set" in error.reason
    assert str(error) == f"{path}: endpoints[0].key: {error.reason}"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: svc\nendpoints:\n  - url: http://x\n    tiemout_s: 3\n")
    error = _error(path)
    assert (error.field, error.reason) == ("endpoints[0].tiemout_s", "unknown key")


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: svc\nendpoints:\n  - key: k\n")
    error = _error(path)
    assert (error.field, error.reason) == ("endpoints[0].url", "required field is missing")


def test_bad_type_names_the_field_and_counts_further_errors(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: svc\nendpoints:\n  - url: http://x\n    timeout_s: abc\n  - url: 5\n",
    )
    error = _error(path)
    assert error.field == "endpoints[0].timeout_s"
    assert "number" in error.reason
    assert error.reason.endswith("(and 1 more)")


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: svc\nendpoints:\n  - url: [unclosed\n")
    error = _error(path)
    assert error.file == str(path)
    assert error.field.startswith("line ")
    assert "invalid YAML" in error.reason


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    error = _error(_write(tmp_path, text))
    assert (error.field, error.reason) == ("(top level)", "expected a mapping")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    error = _error(path)
    assert (error.file, error.field, error.reason) == (str(path), "(file)", "file not found")
