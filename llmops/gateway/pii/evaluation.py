"""Precision and recall of a redactor on a labelled corpus (JSONL of texts and entities).

Each line: ``{"id", "text", "entities": [{"type": "EMAIL", "value": "..."}]}``. A finding
is a true positive when its type matches a label of the same case and its value matches
the label exactly or after dropping punctuation, spaces and case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.gateway.pii.findings import Finding

_NOISE_RE = re.compile(r"[\W_]+")


@dataclass
class Score:
    """Counts for one entity type."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class CorpusReport:
    """Per-entity scores, and the hard negatives (no labels) that produced findings."""

    scores: dict[str, Score] = field(default_factory=dict)
    negatives: int = 0
    noisy_negatives: list[str] = field(default_factory=list)  # case ids
    misses: list[str] = field(default_factory=list)  # "case id: TYPE", for debugging
    false_positives: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'entity':<8} {'tp':>4} {'fp':>4} {'fn':>4} {'prec':>7} {'recall':>7} {'f1':>7}"]
        for entity, s in sorted(self.scores.items()):
            lines.append(
                f"{entity:<8} {s.tp:>4} {s.fp:>4} {s.fn:>4} "
                f"{s.precision:>7.3f} {s.recall:>7.3f} {s.f1:>7.3f}"
            )
        lines.append(f"hard negatives with findings: {len(self.noisy_negatives)}/{self.negatives}")
        return "\n".join(lines)


def load_corpus(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _same(a: str, b: str) -> bool:
    return a == b or _NOISE_RE.sub("", a).lower() == _NOISE_RE.sub("", b).lower()


def evaluate(
    detect: Callable[[str], list[Finding]], cases: Iterable[dict[str, Any]]
) -> CorpusReport:
    """Score ``detect`` (e.g. ``Redactor.detect``) on the labelled ``cases``."""
    report = CorpusReport()
    for case in cases:
        labels = [(e["type"], e["value"]) for e in case["entities"]]
        findings = detect(case["text"])
        if not labels:
            report.negatives += 1
            if findings:
                report.noisy_negatives.append(case["id"])
        for entity, _ in labels:
            report.scores.setdefault(entity, Score())
        for f in findings:
            score = report.scores.setdefault(f.entity, Score())
            match = next((lb for lb in labels if lb[0] == f.entity and _same(lb[1], f.value)), None)
            if match is None:
                score.fp += 1
                report.false_positives.append(f"{case['id']}: {f.entity}")
            else:
                score.tp += 1
                labels.remove(match)
        for entity, _ in labels:
            report.scores[entity].fn += 1
            report.misses.append(f"{case['id']}: {entity}")
    return report
