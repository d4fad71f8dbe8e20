"""The eval output cache in the ops DB, keyed on (prompt version hash, dataset item hash,
model group, parameters, trial): a rerun of unchanged inputs makes no provider call, and
an interrupted run resumes where it stopped, since each output is stored as it arrives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.db.models import EvalOutputCache
from llmops.evals.datasets import canonical_hash

__all__ = ["OutputCache", "output_key"]

_CHUNK = 500


def output_key(
    prompt_hash: str, item_hash: str, model_group: str, params: dict[str, Any], trial: int
) -> str:
    """The cache key of one model output."""
    return canonical_hash([prompt_hash, item_hash, model_group, params, trial])


class OutputCache:
    """Reads and writes :class:`EvalOutputCache` rows (thread-safe: one session per call)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_many(self, keys: Iterable[str]) -> dict[str, EvalOutputCache]:
        wanted = sorted(set(keys))
        found: dict[str, EvalOutputCache] = {}
        with Session(self.engine, expire_on_commit=False) as session:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                rows = session.exec(
                    select(EvalOutputCache).where(col(EvalOutputCache.key).in_(chunk))
                ).all()
                found.update((row.key, row) for row in rows)
        return found

    def put(self, row: EvalOutputCache) -> None:
        """Store one output; a row stored concurrently by another run is kept as is."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
