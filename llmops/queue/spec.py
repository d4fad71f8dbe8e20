"""What a caller submits (:class:`JobSpec`) and how it is checked before anything is stored.

A job names a feature and either a stored prompt (name plus label or version, with
variables) or raw messages. Every check a later run would fail is made at enqueue, so a
bad job is refused with a clear error instead of dead-lettered later: unknown feature,
prompt, label, version or model group, missing template variables, an oversize payload,
a callback URL that is not http(s).

The prompt's label is resolved to a version at enqueue and the job keeps that version,
so a label moved later does not change what a queued job runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import Session, select

from llmops.db.models import Feature
from llmops.errors import ValidationError
from llmops.gateway.config import GatewayConfig
from llmops.prompts.store import resolve_prompt

__all__ = ["MAX_ATTEMPTS_LIMIT", "JobSpec", "PromptRef", "build_payload", "known_features"]

MAX_ATTEMPTS_LIMIT = 20


class PromptRef(BaseModel):
    """A stored prompt: by explicit version, else by label (default ``production``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    label: str | None = Field(default=None, min_length=1, max_length=64)
    version: int | None = Field(default=None, gt=0)
    variables: dict[str, Any] = Field(default_factory=dict)


class JobSpec(BaseModel):
    """A job as submitted through HTTP, the CLI or the Python API."""

    model_config = ConfigDict(extra="forbid")

    feature: str = Field(min_length=1, max_length=64)
    prompt: PromptRef | None = None
    messages: list[dict[str, Any]] | None = None
    model_group: str | None = Field(default=None, min_length=1, max_length=100)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS_LIMIT)
    not_before: datetime | None = None
    callback_url: str | None = Field(default=None, max_length=2000)
    action_id: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"callback_url must be an http:// or https:// URL, got {url!r}")
        return url

    @field_validator("not_before")
    @classmethod
    def _aware(cls, moment: datetime | None) -> datetime | None:
        if moment is not None and moment.tzinfo is None:
            raise ValueError("not_before needs a time zone (e.g. 2026-01-01T12:00:00Z)")
        return moment

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> JobSpec:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("messages must not be empty")
            for i, message in enumerate(self.messages):
                if not isinstance(message.get("role"), str) or "content" not in message:
                    raise ValueError(f"messages[{i}] needs a role and content")
        return self

    @classmethod
    def parse(cls, data: Any) -> JobSpec:
        """Validate ``data``; pydantic's errors become one :class:`ValidationError` line."""
        from pydantic import ValidationError as PydanticError

        try:
            return cls.model_validate(data)
        except PydanticError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ValidationError(f"invalid job: {where}: {message}") from None


def known_features(session: Session, config: GatewayConfig) -> set[str]:
    """Features a job may name: rows of the ``features`` table and ``features:`` in the
    gateway config."""
    rows = session.exec(select(Feature.id)).all()
    return set(rows) | set(config.features)


def build_payload(
    session: Session, config: GatewayConfig, spec: JobSpec, *, max_bytes: int
) -> dict[str, Any]:
    """The stored payload of ``spec``, or :class:`ValidationError` naming what is wrong."""
    features = known_features(session, config)
    if spec.feature not in features:
        have = ", ".join(sorted(features)) or "none"
        raise ValidationError(f"unknown feature {spec.feature!r} (known: {have})")
    payload: dict[str, Any] = {}
    group = spec.model_group
    if spec.prompt is not None:
        ref = spec.prompt
        resolved = resolve_prompt(session, ref.name, label=ref.label, version=ref.version)
        resolved.prompt.render(ref.variables)  # missing variables: ValidationError
        group = group or resolved.prompt.model_group
        payload["prompt"] = {
            "name": resolved.name,
            "version": resolved.version,
            "label": ref.label if ref.version is None else None,
            "variables": ref.variables,
        }
    else:
        payload["messages"] = spec.messages
    if group is None:
        feature = session.get(Feature, spec.feature)
        group = feature.default_model_group if feature is not None else None
    if group is None:
        raise ValidationError(
            f"no model group: give model_group (feature {spec.feature!r} has no default)"
        )
    if group not in config.model_groups:
        known = ", ".join(sorted(config.model_groups))
        raise ValidationError(f"unknown model group {group!r} (known: {known})")
    payload["model_group"] = group
    if spec.max_tokens is not None:
        payload["max_tokens"] = spec.max_tokens
    if spec.temperature is not None:
        payload["temperature"] = spec.temperature
    try:
        size = len(json.dumps(payload, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"job payload is not JSON-serializable: {exc}") from None
    if size > max_bytes:
        raise ValidationError(f"job payload is {size} bytes, over the limit of {max_bytes}")
    return payload
