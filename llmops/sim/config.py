"""Simulator configuration: per-model profiles (latency, faults, output shape), validated.

The YAML (``config/sim.yaml``) and the JSON body of ``POST /_sim/config`` share one shape::

    seed: 7                  # seeds fault injection and latency sampling (reproducible runs)
    strict_models: false     # true: unknown models get 404 model_not_found
    api_key: null            # set to require `Authorization: Bearer <api_key>` on /v1/*
    default: {<profile>}     # applies to every model not listed under `models`
    models:
      gpt-4o-mini: {<profile>}
    datasets: [evals/datasets/*.jsonl]   # items the sim answers (error_rate per profile)

A model profile is complete on its own: it does not inherit from ``default``. Any
validation failure raises :class:`llmops.errors.ConfigError` naming the file and field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmops.errors import ConfigError

__all__ = ["FailFirst", "LatencyDist", "Profile", "QualityRule", "ResponseRule", "SimConfig"]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
_Z95 = 1.6448536269514722  # standard normal quantile at 0.95


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyDist(_Strict):
    """A latency distribution in milliseconds.

    ``fixed`` uses ``value``; ``uniform`` uses ``min``/``max``; ``lognormal`` uses ``median``
    (or ``mean``) and ``p95``, optionally clipped at ``max``. A bare number means fixed.
    """

    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    value: float = Field(default=0.0, ge=0.0)
    min: float | None = Field(default=None, ge=0.0)
    max: float | None = Field(default=None, ge=0.0)
    median: float | None = Field(default=None, gt=0.0)
    mean: float | None = Field(default=None, gt=0.0)
    p95: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _number_is_fixed(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"dist": "fixed", "value": data}
        return data

    @model_validator(mode="after")
    def _check_parameters(self) -> Self:
        if self.dist == "uniform":
            if self.min is None or self.max is None:
                raise ValueError("uniform needs min and max")
            if self.min > self.max:
                raise ValueError("uniform needs min <= max")
        elif self.dist == "lognormal":
            if (self.median is None) == (self.mean is None):
                raise ValueError("lognormal needs exactly one of median or mean, and p95")
            if self.p95 is None:
                raise ValueError("lognormal needs p95")
            self.lognormal_params()  # raises ValueError when p95 is out of range
        return self

    def lognormal_params(self) -> tuple[float, float]:
        """(mu, sigma) of the underlying normal, from median or mean and p95."""
        assert self.p95 is not None
        if self.median is not None:
            if self.p95 < self.median:
                raise ValueError("lognormal needs p95 >= median")
            return math.log(self.median), math.log(self.p95 / self.median) / _Z95
        assert self.mean is not None
        # mean = e^(mu + s^2/2) and p95 = e^(mu + z*s)  =>  s^2/2 - z*s + ln(p95/mean) = 0
        ratio = math.log(self.p95 / self.mean)
        disc = _Z95 * _Z95 - 2.0 * ratio
        if ratio < 0 or disc < 0:
            raise ValueError("lognormal needs mean <= p95 <= ~3.87 * mean")
        sigma = _Z95 - math.sqrt(disc)
        return math.log(self.mean) - sigma * sigma / 2.0, sigma

    @property
    def is_zero(self) -> bool:
        """True when every sample is 0 ms, so the server can skip sleeping entirely."""
        return self.dist == "fixed" and self.value == 0.0


class ResponseRule(_Strict):
    """Reply ``reply`` when ``match`` (a regex, searched) occurs in the last user message."""

    match: re.Pattern[str]
    reply: str


class FailFirst(_Strict):
    """The first ``n`` requests for a model fail with ``status`` (then normal behaviour)."""

    n: int = Field(ge=0)
    status: int = Field(default=503, ge=400, le=599)


class QualityRule(_Strict):
    """Requests whose text matches ``match`` (a regex) get dataset answers wrong at
    ``error_rate`` instead of the profile's: a worse prompt, simulated."""

    match: re.Pattern[str]
    error_rate: Probability


class Profile(_Strict):
    """How one model behaves: latency, faults, output shape and usage details."""

    ttft_ms: LatencyDist = Field(default_factory=LatencyDist)
    tokens_per_s: float = Field(default=0.0, ge=0.0, description="0 means instant output")
    errors: dict[int, Probability] = Field(default_factory=dict)
    retry_after_s: float = Field(default=1.0, ge=0.0)
    hang_rate: Probability = 0.0
    fail_first: FailFirst | None = None
    min_output_tokens: int = Field(default=8, ge=0)
    max_output_tokens: int = Field(default=48, ge=0)
    responses: list[ResponseRule] = Field(default_factory=list)
    echo: bool = False
    cached_tokens_ratio: Probability = 0.0
    reasoning_tokens: int = Field(default=0, ge=0)
    stream_chunk_tokens: int = Field(default=4, ge=1)
    error_rate: Probability = Field(
        default=0.0, description="share of dataset items answered wrongly (see sim/answers.py)"
    )
    quality: list[QualityRule] = Field(default_factory=list)

    @field_validator("errors")
    @classmethod
    def _check_statuses(cls, errors: dict[int, float]) -> dict[int, float]:
        for status in errors:
            if not 400 <= status <= 599:
                raise ValueError(f"status {status} is not an HTTP error status (400-599)")
        return errors

    @model_validator(mode="after")
    def _check_totals(self) -> Self:
        if self.min_output_tokens > self.max_output_tokens:
            raise ValueError("min_output_tokens must be <= max_output_tokens")
        if sum(self.errors.values()) + self.hang_rate > 1.0 + 1e-9:
            raise ValueError("error probabilities plus hang_rate must sum to at most 1")
        return self


class SimConfig(_Strict):
    """The whole simulator setup: a default profile and named model profiles."""

    seed: int = 0
    strict_models: bool = False
    api_key: str | None = None
    default: Profile = Field(default_factory=Profile)
    models: dict[str, Profile] = Field(default_factory=dict)
    datasets: list[str] = Field(
        default_factory=list, description="JSONL dataset globs whose items the sim answers"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _raise_config_error(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        # Callers catch one exception type for every config file; pydantic's own
        # ValidationError is translated here, at the boundary.
        try:
            return handler(data)
        except ValidationError as exc:
            context = info.context if isinstance(info.context, dict) else {}
            raise _config_error(str(context.get("file", "<sim config>")), exc) from exc

    def profile_for(self, model: str) -> Profile | None:
        """The profile serving ``model``; None when unknown and ``strict_models`` is set."""
        profile = self.models.get(model)
        if profile is None and not self.strict_models:
            return self.default
        return profile

    @classmethod
    def load(cls, path: Path | None) -> SimConfig:
        """Read a YAML file; ``None`` gives the built-in zero-latency, fault-free config."""
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(str(path), "<file>", f"cannot read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), "<file>", f"invalid YAML: {exc}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(str(path), "<root>", "expected a mapping at the top level")
        return cls.model_validate(raw, context={"file": str(path)})


def _config_error(file: str, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "<root>"
    reason = first["msg"]
    if len(exc.errors()) > 1:
        reason += f" (and {len(exc.errors()) - 1} more)"
    return ConfigError(file, field, reason)
