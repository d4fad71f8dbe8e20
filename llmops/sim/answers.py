"""Answering dataset items and judge requests, with a configurable error rate per model.

The simulator loads the datasets named in its config (``datasets:``, glob patterns of
``evals/datasets/*.jsonl`` files). A request whose messages contain every string
variable of an item gets that item's ``expected`` answer, or a wrong one for a share
``error_rate`` of the items (per model profile; a ``quality`` rule matching the request
text overrides it, so a "worse prompt" can be simulated too).

Which items come out wrong is decided per item from the config seed, not per prompt or
model: a lower error rate is wrong on a subset of the items a higher one gets wrong, like
hard examples that stay hard. So an equal-quality prompt change scores the same, and a
worse model or prompt loses exactly the extra items: the demo and tests can show a gate
that passes the first and fails the second.

A request carrying the judge marker (:data:`llmops.evals.judge.JUDGE_MARKER`) is graded:
score 1 when the ``<output>`` equals or contains the ``<reference>``, else 0, as JSON.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.evals.judge import JUDGE_MARKER
from llmops.sim.config import Profile

__all__ = ["DatasetAnswers", "judge_reply"]


@dataclass(frozen=True)
class _Item:
    id: str
    needles: tuple[str, ...]
    expected: Any


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _text(messages: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "\n".join(parts)


def _unit(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _serialize(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class DatasetAnswers:
    """The items of the configured datasets, and the answer (right or wrong) to each."""

    def __init__(self, items: list[_Item], seed: int) -> None:
        self.items, self.seed = items, seed
        self._labels = sorted({i.expected for i in items if isinstance(i.expected, str)})

    @classmethod
    def load(cls, patterns: Sequence[str], seed: int) -> DatasetAnswers:
        """Items from every JSONL file matching ``patterns`` (bad lines are skipped)."""
        items = []
        for pattern in patterns:
            for path in sorted(glob.glob(pattern)):
                with open(path, encoding="utf-8") as handle:
                    for line in handle:
                        try:
                            raw = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if not isinstance(raw, dict) or raw.get("expected") is None:
                            continue
                        needles = tuple(_strings(raw.get("input")))
                        if needles:
                            items.append(_Item(str(raw.get("id")), needles, raw["expected"]))
        return cls(items, seed)

    def find(self, text: str) -> _Item | None:
        """The item whose variables all occur in ``text`` (the most specific one)."""
        best: _Item | None = None
        best_len = 0
        for item in self.items:
            size = sum(len(n) for n in item.needles)
            if size > best_len and all(n in text for n in item.needles):
                best, best_len = item, size
        return best

    def reply(self, messages: Sequence[Mapping[str, Any]], profile: Profile) -> str | None:
        """The answer to a dataset item, or None when the request is not one."""
        if not self.items:
            return None
        text = _text(messages)
        item = self.find(text)
        if item is None:
            return None
        rate = profile.error_rate
        for rule in profile.quality:
            if rule.match.search(text):
                rate = rule.error_rate
                break
        if _unit(self.seed, item.id) >= rate:
            return _serialize(item.expected)
        return _serialize(self._wrong(item))

    def _wrong(self, item: _Item) -> Any:
        value = item.expected
        if isinstance(value, str):
            others = [label for label in self._labels if label != value]
            if others and len(self._labels) <= 20:  # a label set: answer another label
                return others[int(_unit(self.seed, item.id, "pick") * len(others))]
            return "I am not sure."
        if isinstance(value, bool):
            return not value
        if isinstance(value, int | float):
            return value + 1
        if isinstance(value, dict) and value:
            key = sorted(value)[0]
            wrong = dict(value)
            wrong[key] = self._wrong(_Item(item.id, item.needles, value[key]))
            return wrong
        return None


_TAG = re.compile(r"<(output|reference)>(.*?)</\1>", re.DOTALL)


def judge_reply(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """A judge's JSON verdict when the request is a judge request, else None."""
    if not any(JUDGE_MARKER in str(m.get("content", "")) for m in messages):
        return None
    parts = dict(_TAG.findall(_text(messages)))
    output, reference = _norm(parts.get("output", "")), _norm(parts.get("reference", ""))
    good = (output == reference or reference in output) if reference else bool(output)
    reason = "matches the reference" if good else "does not match the reference"
    return json.dumps({"score": 1.0 if good else 0.0, "reason": reason})
