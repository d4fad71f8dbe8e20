"""The labelled PII corpus: precision and recall per entity type, and silent hard negatives.

The corpus is ``tests/data/pii_corpus.jsonl`` (regenerate with
``uv run python tests/data/pii_corpus_gen.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stdnum import iban, luhn

from llmops.gateway.pii.evaluation import evaluate, load_corpus
from llmops.gateway.redaction import BUILTIN_ENTITIES, RedactionPolicy, Redactor

CORPUS = Path(__file__).parents[1] / "data" / "pii_corpus.jsonl"
MIN_RECALL = 0.99
MIN_PRECISION = 0.95


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    return load_corpus(CORPUS)


def test_corpus_is_large_labelled_and_consistent(cases: list[dict[str, Any]]) -> None:
    assert len(cases) >= 300
    assert len({c["id"] for c in cases}) == len(cases)
    per_type: dict[str, int] = {}
    for case in cases:
        for label in case["entities"]:
            assert label["value"] in case["text"], case["id"]
            per_type[label["type"]] = per_type.get(label["type"], 0) + 1
            digits = "".join(ch for ch in label["value"] if ch.isdigit())
            if label["type"] == "CARD":
                assert luhn.is_valid(digits), case["id"]
            if label["type"] == "IBAN":
                assert iban.is_valid(label["value"]), case["id"]
    assert set(per_type) == set(BUILTIN_ENTITIES)
    assert min(per_type.values()) >= 25, per_type
    assert sum(1 for c in cases if not c["entities"]) >= 100  # hard negatives


def test_precision_and_recall_per_entity(cases: list[dict[str, Any]]) -> None:
    report = evaluate(Redactor(RedactionPolicy()).detect, cases)
    failing = [
        entity
        for entity, score in report.scores.items()
        if score.recall < MIN_RECALL or score.precision < MIN_PRECISION
    ]
    assert not failing, (
        f"below recall {MIN_RECALL} / precision {MIN_PRECISION}: {failing}\n{report.table()}\n"
        f"missed: {report.misses}\nfalse positives: {report.false_positives}"
    )


def test_hard_negatives_yield_no_findings(cases: list[dict[str, Any]]) -> None:
    negatives = [c for c in cases if not c["entities"]]
    report = evaluate(Redactor(RedactionPolicy()).detect, negatives)
    assert report.negatives == len(negatives)
    assert report.noisy_negatives == [], f"{report.false_positives}\n{report.table()}"
