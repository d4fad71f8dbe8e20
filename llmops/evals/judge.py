"""LLM-as-judge: a rubric, the example and the output go to a judge model through the
gateway (its own feature, so its own spend cap); the reply must be JSON
``{"score": 0..1, "reason": "..."}``. Anything else raises :class:`ScorerError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from llmops.evals.datasets import DatasetItem
from llmops.evals.scorers import Score, Scorer, ScorerError

__all__ = ["JUDGE_MARKER", "JudgeCall", "LlmJudge", "judge_messages", "parse_verdict"]

#: Marks judge requests (the simulator recognises it and grades as a judge would).
JUDGE_MARKER = "llmops-judge"

#: ``await call(messages, model_group)`` -> the judge's reply text.
JudgeCall = Callable[[list[dict[str, str]], str], Awaitable[str]]

_SYSTEM = (
    f"You are an impartial grader ({JUDGE_MARKER}). Grade the OUTPUT against the RUBRIC, "
    "using the REFERENCE when one is given. Reply with only a JSON object: "
    '{"score": <number from 0 to 1>, "reason": "<one sentence>"}'
)


def judge_messages(rubric: str, item: DatasetItem, output: str) -> list[dict[str, str]]:
    """The judge's chat messages for one output."""
    reference = item.reference if item.reference is not None else item.expected
    ref = reference if isinstance(reference, str) else json.dumps(reference)
    body = (
        f"<rubric>{rubric}</rubric>\n<input>{json.dumps(item.input, ensure_ascii=False)}"
        f"</input>\n<reference>{'' if reference is None else ref}</reference>\n"
        f"<output>{output}</output>"
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": body}]


def parse_verdict(reply: str) -> tuple[float, str]:
    """(score, reason) from a judge reply; ScorerError when it cannot be parsed."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    if match is None:
        raise ScorerError(f"judge reply is not JSON: {reply[:120]!r}")
    try:
        data = json.loads(match.group())
    except json.JSONDecodeError as exc:
        raise ScorerError(f"judge reply is not JSON ({exc.msg}): {reply[:120]!r}") from None
    score = data.get("score") if isinstance(data, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise ScorerError(f"judge reply has no score in [0, 1]: {reply[:120]!r}")
    return float(score), str(data.get("reason", ""))


class LlmJudge(Scorer):
    """``params``: ``rubric`` (required), ``model_group``, ``pass_at`` (default 0.5)."""

    name = "llm_judge"

    def __init__(self, params: Mapping[str, Any], call: JudgeCall | None) -> None:
        super().__init__(params)
        rubric = self.params.get("rubric")
        if not isinstance(rubric, str) or not rubric.strip():
            raise ValueError("params.rubric: the grading rubric is required")
        self.rubric = rubric
        self.model_group = str(self.params.get("model_group", "smart"))
        self.pass_at = float(self.params.get("pass_at", 0.5))
        self.call = call

    def score(self, output: str, item: DatasetItem) -> Score:
        raise ScorerError("llm_judge is asynchronous: use ascore")

    async def ascore(self, output: str, item: DatasetItem) -> Score:
        if self.call is None:
            raise ScorerError("llm_judge has no gateway to call")
        return await self.grade(self.call, output, item)

    async def grade(self, call: JudgeCall, output: str, item: DatasetItem) -> Score:
        """Score ``output`` by asking the judge through ``call``."""
        reply = await call(judge_messages(self.rubric, item, output), self.model_group)
        score, reason = parse_verdict(reply)
        return Score(score, score >= self.pass_at, reason)
