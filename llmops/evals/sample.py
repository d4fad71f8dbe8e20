"""Golden-set candidates from real traffic: recent, successful request-log rows of a
feature (already redacted by the gateway), turned back into prompt variables where the
prompt's template can be inverted, deduplicated, sampled reproducibly.

They are proposals: ``reference`` holds the logged answer (unreviewed), the tag
``needs-review`` says a person must confirm or correct it into ``expected``.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.models import RequestLog
from llmops.evals.datasets import canonical_hash
from llmops.prompts.files import PromptFile

__all__ = ["invert_messages", "sample_candidates"]

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _pattern(template: str) -> re.Pattern[str] | None:
    if "{%" in template or re.search(r"\{\{(?!\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\})", template):
        return None  # control flow or filters: not invertible by a regex
    parts, seen, last = [], set(), 0
    for m in _VAR.finditer(template):
        parts.append(re.escape(template[last : m.start()]))
        name = m.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
        seen.add(name)
        last = m.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts), re.DOTALL)


def invert_messages(prompt: PromptFile, messages: list[dict[str, Any]]) -> dict[str, str] | None:
    """The variables that rendered ``messages`` from ``prompt``, or None if they cannot be
    recovered (a different template, or one with control flow)."""
    if len(messages) != len(prompt.messages):
        return None
    found: dict[str, str] = {}
    for template, message in zip(prompt.messages, messages, strict=True):
        pattern = _pattern(template.content)
        content = message.get("content")
        if pattern is None or not isinstance(content, str) or message.get("role") != template.role:
            return None
        match = pattern.fullmatch(content)
        if match is None:
            return None
        for key, value in match.groupdict().items():
            if found.get(key, value) != value:
                return None
            found[key] = value
    return found


def sample_candidates(
    engine: Engine,
    feature: str,
    n: int,
    *,
    prompt: PromptFile | None = None,
    seed: int = 0,
    scan: int = 5000,
) -> list[dict[str, Any]]:
    """Up to ``n`` distinct dataset lines proposed from ``feature``'s recent traffic."""
    with Session(engine) as session:
        rows = session.exec(
            select(RequestLog)
            .where(
                RequestLog.feature_id == feature,
                RequestLog.status == "ok",
                col(RequestLog.request_text).is_not(None),
            )
            .order_by(col(RequestLog.id).desc())
            .limit(scan)
        ).all()
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            messages = json.loads(row.request_text or "")
        except json.JSONDecodeError:
            continue
        variables = invert_messages(prompt, messages) if prompt is not None else None
        tags = ["sampled", feature, "needs-review"]
        if variables is None:
            variables = {"messages": messages}
            tags.append("needs-variables")
        key = canonical_hash(variables)
        if key in unique:
            continue
        unique[key] = {
            "id": f"{feature}-{row.request_id}",
            "input": variables,
            "reference": row.response_text,
            "tags": tags,
        }
    picked = sorted(unique)
    random.Random(seed).shuffle(picked)
    return [unique[k] for k in sorted(picked[:n], key=lambda k: unique[k]["id"])]
