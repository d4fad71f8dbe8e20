"""Golden datasets: ``evals/datasets/<name>.jsonl``, one example a line, versioned by hash.

A line is ``{"id": ..., "input": {variables}, "expected": ..., "reference": ...,
"tags": [...]}``; ``expected`` (what exact scorers compare with) or ``reference`` (what a
judge reads) may be absent. A bad line does not stop the load: it is kept as a
:class:`BadLine` (file, line, reason) so a run records it as unscored instead of
silently testing fewer examples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import ConfigError

__all__ = ["BadLine", "Dataset", "DatasetItem", "canonical_hash", "load_dataset"]

_KEYS = {"id", "input", "expected", "reference", "tags", "metadata"}


def canonical_hash(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DatasetItem:
    """One golden example."""

    id: str
    input: dict[str, Any]
    expected: Any = None
    reference: Any = None
    tags: tuple[str, ...] = ()
    line: int = 0

    @property
    def hash(self) -> str:
        """What a model output depends on: the variables (and nothing else)."""
        return canonical_hash(self.input)


@dataclass(frozen=True)
class BadLine:
    """A dataset line that could not be read as an example."""

    file: str
    line: int
    reason: str
    item_id: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Dataset:
    """A loaded dataset: good items, bad lines, and the content hash of the file."""

    name: str
    path: Path
    hash: str
    items: list[DatasetItem] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def _item(raw: Any, file: str, line: int, seen: set[str]) -> DatasetItem | BadLine:
    if not isinstance(raw, dict):
        return BadLine(file, line, "expected a JSON object")
    raw_id = raw.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    if not isinstance(raw_id, str) or not raw_id or len(raw_id) > 200:
        return BadLine(file, line, "id: must be a non-empty string (at most 200 characters)")
    if raw_id in seen:
        return BadLine(file, line, f"id: duplicate id {raw_id!r}", raw_id)
    seen.add(raw_id)
    unknown = set(raw) - _KEYS
    if unknown:
        keys = ", ".join(sorted(_KEYS))
        return BadLine(file, line, f"unknown key {sorted(unknown)[0]!r} (keys: {keys})", raw_id)
    variables = raw.get("input")
    if not isinstance(variables, dict):
        return BadLine(file, line, "input: must be an object of prompt variables", raw_id)
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return BadLine(file, line, "tags: must be a list of strings", raw_id)
    return DatasetItem(
        id=raw_id,
        input=variables,
        expected=raw.get("expected"),
        reference=raw.get("reference"),
        tags=tuple(tags),
        line=line,
    )


def load_dataset(path: Path) -> Dataset:
    """Read a JSONL dataset; bad lines are collected, not raised. A missing or empty file
    raises :class:`ConfigError`."""
    file = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "dataset not found") from None
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc}") from exc
    dataset = Dataset(name=path.stem, path=path, hash=hashlib.sha256(data).hexdigest())
    seen: set[str] = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(file)", f"not UTF-8: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            dataset.bad.append(BadLine(file, number, f"not JSON: {exc.msg} (column {exc.colno})"))
            continue
        parsed = _item(raw, file, number, seen)
        if isinstance(parsed, BadLine):
            dataset.bad.append(parsed)
        else:
            dataset.items.append(parsed)
    if not dataset.items and not dataset.bad:
        raise ConfigError(file, "(file)", "dataset has no examples")
    return dataset
