"""Prompt files: ``prompts/<name>.yaml``, validated, rendered with strict Jinja2 templates."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.configfile import load_yaml_model
from llmops.errors import ConfigError, ValidationError

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


class PromptMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class PromptFile(BaseModel):
    """One prompt: messages with ``{{ variables }}``, the model group and call parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,99}$")
    description: str = ""
    owner: str = ""
    model_group: str
    messages: list[PromptMessage] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(_PARAM_CHECKS)
        if unknown:
            known = ", ".join(sorted(_PARAM_CHECKS))
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r} (known: {known})")
        for key, value in params.items():
            reason = _PARAM_CHECKS[key](value)
            if reason:
                raise ValueError(f"{key}: {reason}")
        return params

    def call_params(self) -> dict[str, Any]:
        """Provider parameters beyond temperature and max_tokens (``json_schema`` becomes
        an OpenAI ``response_format``)."""
        extra = {k: v for k, v in self.params.items() if k not in ("temperature", "max_tokens")}
        schema = extra.pop("json_schema", None)
        if schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": self.name.replace("-", "_"), "schema": schema},
            }
        return extra

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of what changes behaviour: messages, model group, parameters."""
        body = {
            "messages": [m.model_dump() for m in self.messages],
            "model_group": self.model_group,
            "params": self.params,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @cached_property
    def variables(self) -> set[str]:
        names: set[str] = set()
        for message in self.messages:
            names |= jinja2.meta.find_undeclared_variables(_ENV.parse(message.content))
        return names

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """The messages with variables filled in; a missing variable is an error."""
        missing = self.variables - set(variables)
        if missing:
            raise ValidationError(
                f"prompt {self.name!r} is missing variables: {', '.join(sorted(missing))}"
            )
        return [
            {"role": m.role, "content": _ENV.from_string(m.content).render(**variables)}
            for m in self.messages
        ]


def _number(low: float, high: float) -> Any:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok and low <= value <= high else f"must be a number in [{low}, {high}]"

    return check


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive integer"


def _response_format(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return None
    return "must be a mapping with a type (text, json_object or json_schema)"


def _json_schema(value: Any) -> str | None:
    import jsonschema

    if not isinstance(value, dict):
        return "must be a JSON Schema mapping"
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    return None


def _stop(value: Any) -> str | None:
    ok = isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )
    return None if ok else "must be a string or a list of strings"


#: Accepted ``params`` and their checks (a reason string when invalid).
_PARAM_CHECKS: dict[str, Any] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "max_tokens": _positive_int,
    "seed": lambda v: (
        None if isinstance(v, int) and not isinstance(v, bool) else "must be an integer"
    ),
    "stop": _stop,
    "response_format": _response_format,
    "json_schema": _json_schema,
}


def load_prompt(path: Path) -> PromptFile:
    """Read and validate one prompt file; its name must match the file name."""
    prompt = load_yaml_model(path, PromptFile)
    if prompt.name != path.stem:
        raise ConfigError(str(path), "name", f"must match the file name {path.stem!r}")
    for i, message in enumerate(prompt.messages):
        try:
            _ENV.parse(message.content)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                str(path), f"messages[{i}].content", f"template error: {exc}"
            ) from None
    return prompt


def load_prompts(folder: Path) -> dict[str, PromptFile]:
    """Every ``*.yaml`` prompt in ``folder``, by name."""
    return {p.stem: load_prompt(p) for p in sorted(folder.glob("*.yaml"))}
