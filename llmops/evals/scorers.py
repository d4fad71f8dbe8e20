"""Scorers: each turns (output, example) into a :class:`Score` in [0, 1] with pass/fail and
a reason. Built in: ``exact``, ``contains``, ``regex``, ``json_valid``, ``json_schema``,
``json_match`` (field level), ``numeric``, ``similarity``, ``llm_judge``
(:mod:`llmops.evals.judge`); custom ones are ``<module>.<function>`` in
``evals/scorers/<module>.py``.

A scorer that cannot score (a judge reply that does not parse, a custom scorer that
raises) raises :class:`ScorerError`: the runner retries it and, if it still fails,
records the example as unscored, never as a pass.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import LLMOpsError
from llmops.evals.datasets import DatasetItem

__all__ = ["BUILTIN", "Score", "Scorer", "ScorerError", "load_custom", "to_score"]


class ScorerError(LLMOpsError):
    """A scorer could not produce a score for this output (retried, then unscored)."""


@dataclass(frozen=True)
class Score:
    """One scorer's verdict on one output."""

    score: float
    passed: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "passed": self.passed, "reason": self.reason}


class Scorer:
    """Base class: override :meth:`score` (sync) or :meth:`ascore` (async)."""

    name = "scorer"

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def score(self, output: str, item: DatasetItem) -> Score:
        raise NotImplementedError

    async def ascore(self, output: str, item: DatasetItem) -> Score:
        return self.score(output, item)

    def _expected(self, item: DatasetItem) -> Any:
        value = self.params.get("value", item.expected)
        if value is None:
            raise ScorerError(f"{self.name}: item {item.id!r} has no expected value")
        return value


def _norm(text: str, params: Mapping[str, Any]) -> str:
    if params.get("strip", True):
        text = " ".join(text.split())
    if params.get("ignore_case", True):
        text = text.casefold()
    return text


def _bool(ok: bool, reason_ok: str, reason_bad: str) -> Score:
    return Score(1.0 if ok else 0.0, ok, reason_ok if ok else reason_bad)


class Exact(Scorer):
    name = "exact"

    def score(self, output: str, item: DatasetItem) -> Score:
        expected = self._expected(item)
        want = expected if isinstance(expected, str) else json.dumps(expected)
        ok = _norm(output, self.params) == _norm(want, self.params)
        return _bool(ok, "exact match", f"expected {want!r}, got {output[:80]!r}")


class Contains(Scorer):
    name = "contains"

    def score(self, output: str, item: DatasetItem) -> Score:
        expected = self._expected(item)
        wanted = [str(v) for v in expected] if isinstance(expected, list) else [str(expected)]
        got = _norm(output, self.params)
        missing = [w for w in wanted if _norm(w, self.params) not in got]
        found = len(wanted) - len(missing)
        reason = "contains all" if not missing else f"missing {missing[0]!r}"
        return Score(found / len(wanted), not missing, reason)


class Regex(Scorer):
    name = "regex"

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        pattern = self.params.get("pattern")
        if not isinstance(pattern, str):
            raise ValueError("params.pattern: a regular expression is required")
        try:
            self.pattern = re.compile(pattern, re.IGNORECASE if params.get("ignore_case") else 0)
        except re.error as exc:
            raise ValueError(f"params.pattern: invalid regular expression: {exc}") from None

    def score(self, output: str, item: DatasetItem) -> Score:
        ok = self.pattern.search(output) is not None
        return _bool(ok, "pattern found", f"no match for /{self.pattern.pattern}/")


def _parse_json(output: str) -> Any:
    text = output.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else text)


class JsonValid(Scorer):
    name = "json_valid"

    def score(self, output: str, item: DatasetItem) -> Score:
        try:
            _parse_json(output)
        except json.JSONDecodeError as exc:
            return Score(0.0, False, f"not JSON: {exc.msg}")
        return Score(1.0, True, "valid JSON")


class JsonSchema(Scorer):
    name = "json_schema"

    def __init__(self, params: Mapping[str, Any]) -> None:
        import jsonschema

        super().__init__(params)
        schema = self.params.get("schema")
        if not isinstance(schema, dict):
            raise ValueError("params.schema: a JSON Schema mapping is required")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"params.schema: not a valid JSON Schema: {exc.message}") from None
        self.validator = jsonschema.Draft202012Validator(schema)

    def score(self, output: str, item: DatasetItem) -> Score:
        try:
            data = _parse_json(output)
        except json.JSONDecodeError as exc:
            return Score(0.0, False, f"not JSON: {exc.msg}")
        errors = sorted(self.validator.iter_errors(data), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return Score(0.0, False, f"schema: {where}: {errors[0].message}")
        return Score(1.0, True, "conforms to the schema")


class JsonMatch(Scorer):
    """Share of expected fields (or ``params.fields``) equal in the output JSON."""

    name = "json_match"

    def score(self, output: str, item: DatasetItem) -> Score:
        expected = self._expected(item)
        if not isinstance(expected, dict):
            raise ScorerError(f"json_match: item {item.id!r} expected value is not an object")
        try:
            data = _parse_json(output)
        except json.JSONDecodeError as exc:
            return Score(0.0, False, f"not JSON: {exc.msg}")
        if not isinstance(data, dict):
            return Score(0.0, False, "output JSON is not an object")
        fields = self.params.get("fields") or sorted(expected)
        wrong = [f for f in fields if data.get(f) != expected.get(f)]
        score = (len(fields) - len(wrong)) / len(fields) if fields else 1.0
        reason = "all fields match" if not wrong else f"field {wrong[0]!r}: {data.get(wrong[0])!r}"
        return Score(score, not wrong, reason)


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")


class Numeric(Scorer):
    """The first number in the output within ``tolerance`` (absolute) or ``rel_tolerance``."""

    name = "numeric"

    def score(self, output: str, item: DatasetItem) -> Score:
        expected = self._expected(item)
        try:
            want = float(expected)
        except (TypeError, ValueError):
            raise ScorerError(
                f"numeric: item {item.id!r} expected {expected!r} is not a number"
            ) from None
        match = _NUMBER.search(output)
        if match is None:
            return Score(0.0, False, "no number in the output")
        got = float(match.group().replace(",", "."))
        tolerance = max(
            float(self.params.get("tolerance", 0.0)),
            abs(want) * float(self.params.get("rel_tolerance", 0.0)),
        )
        ok = abs(got - want) <= tolerance
        return _bool(ok, f"{got:g} within {tolerance:g} of {want:g}", f"{got:g} != {want:g}")


class Similarity(Scorer):
    """difflib's ratio of normalized texts; passes at ``pass_at`` (default 0.8)."""

    name = "similarity"

    def score(self, output: str, item: DatasetItem) -> Score:
        expected = self._expected(item)
        want = expected if isinstance(expected, str) else json.dumps(expected)
        ratio = difflib.SequenceMatcher(
            None, _norm(output, self.params), _norm(want, self.params)
        ).ratio()
        pass_at = float(self.params.get("pass_at", 0.8))
        return Score(ratio, ratio >= pass_at, f"similarity {ratio:.2f} (pass at {pass_at:g})")


BUILTIN: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (Exact, Contains, Regex, JsonValid, JsonSchema, JsonMatch, Numeric, Similarity)
}


def to_score(value: Any, *, pass_at: float = 0.5) -> Score:
    """A custom scorer's return value as a Score: a bool, a number, (number, reason), a
    mapping with ``score`` (and optional ``passed``, ``reason``), or a Score."""
    if isinstance(value, Score):
        result = value
    elif isinstance(value, bool):
        result = Score(1.0 if value else 0.0, value)
    elif isinstance(value, int | float):
        result = Score(float(value), float(value) >= pass_at)
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int | float):
        result = Score(float(value[0]), float(value[0]) >= pass_at, str(value[1]))
    elif isinstance(value, Mapping) and isinstance(value.get("score"), int | float):
        number = float(value["score"])
        passed = value.get("passed", number >= pass_at)
        result = Score(number, bool(passed), str(value.get("reason", "")))
    else:
        raise ScorerError(f"scorer returned {type(value).__name__}, not a score")
    if not 0.0 <= result.score <= 1.0:
        raise ScorerError(f"score {result.score} is outside [0, 1]")
    return result


class Custom(Scorer):
    """A Python function ``f(output, item, **params)`` from ``evals/scorers/``."""

    def __init__(self, name: str, func: Callable[..., Any], params: Mapping[str, Any]) -> None:
        super().__init__(params)
        self.name, self.func = name, func

    def score(self, output: str, item: DatasetItem) -> Score:
        args = {k: v for k, v in self.params.items() if k != "pass_at"}
        try:
            value = self.func(output, item, **args)
        except ScorerError:
            raise
        except Exception as exc:  # a user's scorer failing is an unscored example
            raise ScorerError(f"{self.name} raised {type(exc).__name__}: {exc}") from exc
        return to_score(value, pass_at=float(self.params.get("pass_at", 0.5)))


def load_custom(name: str, folder: Path) -> Callable[..., Any]:
    """The function ``name`` = ``module.function`` from ``folder/module.py``."""
    module_name, _, func_name = name.partition(".")
    path = folder / f"{module_name}.py"
    if not func_name or not path.is_file():
        raise ValueError(f"no scorer module {path}")
    spec = importlib.util.spec_from_file_location(f"llmops_scorers.{module_name}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ValueError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"{path} has no function {func_name!r}")
    return func  # type: ignore[no-any-return]
