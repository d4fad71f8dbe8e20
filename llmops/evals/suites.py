"""Eval suites: ``evals/suites/<name>.yaml`` names a dataset, a prompt, weighted scorers
with thresholds, trials, and the gate's statistics. Validated with file, field, reason::

    name: ticket_triage
    prompt: classify                # prompts/classify.yaml, by default its production label
    dataset: ticket_triage          # evals/datasets/ticket_triage.jsonl
    model_groups: []                # default: the prompt's own model group
    trials: 1
    spend_cap_usd: "5"              # daily cap on tenant `eval`, feature `eval-<suite>`
    scorers:
      - name: exact                 # built in, or <module>.<function> in evals/scorers/
        weight: 1
        threshold: 0.8              # absolute: the candidate's mean must reach it
        max_drop: 0.02              # regression: confident drop beyond it fails the gate
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from llmops.configfile import load_yaml_model
from llmops.errors import ConfigError
from llmops.evals.judge import LlmJudge
from llmops.evals.scorers import BUILTIN, Custom, Scorer, load_custom

__all__ = ["LoadedSuite", "ScorerSpec", "SuiteFile", "load_suite", "suite_paths"]


class ScorerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # `type` and `metric` are accepted for `name` and `id` (promptfoo and Langfuse wording).
    name: str = Field(min_length=1, validation_alias=AliasChoices("name", "type"))
    id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$",
        validation_alias=AliasChoices("id", "metric"),
    )
    weight: float = Field(default=1.0, gt=0)
    threshold: float | None = Field(default=None, ge=0, le=1)
    max_drop: float = Field(default=0.02, ge=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.id or self.name


class SuiteFile(BaseModel):
    """One suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,59}$")
    description: str = ""
    prompt: str
    dataset: str
    model_groups: list[str] = Field(default_factory=list)
    trials: int = Field(default=1, ge=1, le=50)
    concurrency: int = Field(default=8, ge=1, le=512)
    feature: str | None = Field(default=None, max_length=64)
    spend_cap_usd: Decimal = Field(default=Decimal("5"), gt=0)
    judge_spend_cap_usd: Decimal = Field(default=Decimal("2"), gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    max_unscored: float = Field(default=0.0, ge=0, le=1)
    rule: Literal["confident_drop", "non_inferiority"] = "confident_drop"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    seed: int = 0
    scorers: list[ScorerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_metrics(self) -> SuiteFile:
        seen: set[str] = set()
        for spec in self.scorers:
            if spec.metric in seen:
                raise ValueError(f"two scorers named {spec.metric!r}: give one an id")
            seen.add(spec.metric)
        return self

    @property
    def feature_id(self) -> str:
        return self.feature or f"eval-{self.name}"


@dataclass
class LoadedSuite:
    """A validated suite with its scorers built."""

    spec: SuiteFile
    path: Path
    scorers: list[tuple[ScorerSpec, Scorer]]
    evals_dir: Path

    @property
    def dataset_path(self) -> Path:
        return self.evals_dir / "datasets" / f"{self.spec.dataset}.jsonl"

    def model_groups_used(self) -> set[str]:
        """Model groups the suite itself names (its own and its judges')."""
        groups = set(self.spec.model_groups)
        groups |= {s.model_group for _, s in self.scorers if isinstance(s, LlmJudge)}
        return groups

    @property
    def has_judge(self) -> bool:
        return any(isinstance(s, LlmJudge) for _, s in self.scorers)


def _build(spec: ScorerSpec, folder: Path) -> Scorer:
    if spec.name == "llm_judge":
        return LlmJudge(spec.params, None)
    if spec.name in BUILTIN:
        return BUILTIN[spec.name](spec.params)
    if "." in spec.name:
        return Custom(spec.name, load_custom(spec.name, folder), spec.params)
    known = ", ".join(sorted([*BUILTIN, "llm_judge"]))
    raise ValueError(f"unknown scorer {spec.name!r} (built in: {known}; or module.function)")


def load_suite(path: Path, evals_dir: Path | None = None) -> LoadedSuite:
    """Read and validate a suite file; unknown scorers and bad params name their field."""
    spec = load_yaml_model(path, SuiteFile)
    if spec.name != path.stem:
        raise ConfigError(str(path), "name", f"must match the file name {path.stem!r}")
    root = evals_dir if evals_dir is not None else path.resolve().parent.parent
    scorers = []
    for i, scorer_spec in enumerate(spec.scorers):
        try:
            scorers.append((scorer_spec, _build(scorer_spec, root / "scorers")))
        except ValueError as exc:
            raise ConfigError(str(path), f"scorers[{i}]", str(exc)) from None
    suite = LoadedSuite(spec, path, scorers, root)
    if not suite.dataset_path.is_file():
        raise ConfigError(str(path), "dataset", f"no dataset file {suite.dataset_path}")
    return suite


def suite_paths(evals_dir: Path) -> list[Path]:
    """Every suite file under ``evals_dir/suites``."""
    return sorted((evals_dir / "suites").glob("*.yaml"))
