"""Prompt files: ``prompts/<name>.yaml``, validated, rendered with strict Jinja2 templates."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
from pydantic import BaseModel, ConfigDict, Field

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
