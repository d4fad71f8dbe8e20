"""The simulator's pure logic: token counting, answer generation, fault and latency decisions.

Token rule (cheap, deterministic, no tokenizer import): text is split by the regex
``_TOKEN`` into pieces, and each piece is one token. A piece is a run of up to 8 word
characters with at most one leading whitespace character, one punctuation character with
at most one leading whitespace character, or a run of other whitespace. English prose
comes out near 1.3 tokens per word, close to OpenAI's tokenizers. A prompt costs
``3 + sum(4 + tokens(content) + tokens(name))`` over its messages (OpenAI's published
per-message overhead); a non-text content part (image, audio) costs a flat 85 tokens.

Generated answers are split with the same rule, so ``completion_tokens`` is exactly the
number of pieces returned, and truncating at ``max_tokens`` is cutting the piece list.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmops.sim.config import LatencyDist, Profile

__all__ = [
    "Completion",
    "Decision",
    "FaultInjector",
    "Stats",
    "complete",
    "count_message_tokens",
    "count_tokens",
    "last_user_text",
    "split_tokens",
]

_TOKEN = re.compile(r"\s?\w{1,8}|\s?[^\w\s]|\s+")
_PER_MESSAGE = 4
_PER_REPLY = 3
_NON_TEXT_PART = 85

# A readable string of words, each <= 8 letters so it is exactly one token.
_WORDS = (  # noqa: SIM905
    "the a an of to and in on for with as by from at that this it is are was be can will "
    "model answer request token stream latency cache budget router prompt user system data "
    "result value signal output input quick simple clear short final first next each every "
    "returns checks builds keeps sends reads writes counts moves serves holds shows gives "
    "provider gateway feature metric report queue worker retry limit price cost usage"
).split()


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into token pieces; ``"".join(split_tokens(t)) == t``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Approximate token count of ``text`` (see the module docstring for the rule)."""
    return len(_TOKEN.findall(text))


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += count_tokens(part["text"])
            elif isinstance(part, str):
                total += count_tokens(part)
            else:
                total += _NON_TEXT_PART
        return total
    return 0


def count_message_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request: per-message overhead plus content and names."""
    total = _PER_REPLY
    for message in messages:
        total += _PER_MESSAGE + _content_tokens(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += count_tokens(name)
    return total


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") if isinstance(p, Mapping) else p for p in content]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Text of the last ``user`` message ("" when there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


@dataclass(frozen=True, slots=True)
class Completion:
    """A generated answer with its token pieces and usage numbers."""

    pieces: tuple[str, ...]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _request_rng(model: str, messages: Sequence[Mapping[str, Any]]) -> random.Random:
    canonical = json.dumps([model, messages], sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _generated_pieces(rng: random.Random, n_tokens: int) -> list[str]:
    # Every word is <= 8 letters and "." is one punctuation piece, so each item appended
    # below is exactly one token under ``_TOKEN``.
    pieces: list[str] = []
    while len(pieces) < n_tokens:
        for i in range(rng.randint(6, 14)):
            word = rng.choice(_WORDS)
            word = word.capitalize() if i == 0 else word
            pieces.append(" " + word if pieces else word)
        pieces.append(".")
    del pieces[n_tokens:]
    if n_tokens >= 2:  # end on a full stop, never on "..": "of a. Token" -> "of a token."
        if pieces[-2] == ".":
            pieces[-2] = pieces[-1].lower()  # " Token" -> " token"
        pieces[-1] = "."
    return pieces


def complete(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    profile: Profile,
    max_tokens: int | None = None,
    answer: str | None = None,
) -> Completion:
    """The deterministic answer of ``profile`` to (model, messages), capped at max_tokens.

    Reply source, first that applies: a matching ``responses`` rule, ``answer`` (a
    dataset or judge answer, see :mod:`llmops.sim.answers`), ``echo`` (the last user
    message), else generated prose whose length is drawn, from a seed derived from
    the request, between ``min_output_tokens`` and ``max_output_tokens``. Reasoning
    tokens count toward completion tokens and the cap, as with OpenAI reasoning models.
    """
    prompt_tokens = count_message_tokens(messages)
    pieces: list[str] | None = None
    if profile.responses:
        user_text = last_user_text(messages)
        for rule in profile.responses:
            if rule.match.search(user_text):
                pieces = split_tokens(rule.reply)
                break
    if pieces is None and answer is not None:
        pieces = split_tokens(answer)
    if pieces is None and profile.echo:
        pieces = split_tokens(last_user_text(messages))
    if pieces is None:
        rng = _request_rng(model, messages)
        n = rng.randint(profile.min_output_tokens, profile.max_output_tokens)
        pieces = _generated_pieces(rng, n)

    reasoning = profile.reasoning_tokens
    finish: Literal["stop", "length"] = "stop"
    if max_tokens is not None:
        if reasoning >= max_tokens:
            reasoning, pieces, finish = max_tokens, [], "length"
        elif reasoning + len(pieces) > max_tokens:
            pieces, finish = pieces[: max_tokens - reasoning], "length"
    return Completion(
        pieces=tuple(pieces),
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(pieces) + reasoning,
        cached_tokens=math.floor(prompt_tokens * profile.cached_tokens_ratio),
        reasoning_tokens=reasoning,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What the server does with one request: answer (status 200), fail, or hang."""

    status: int = 200
    hang: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.hang


_OK = Decision()
_HANG = Decision(hang=True)


class FaultInjector:
    """Reproducible fault and latency decisions for one server.

    Faults and latencies use separate ``random.Random`` streams seeded from the config
    seed, so switching latency on or off does not change which requests fail. Each
    request takes exactly one draw from the fault stream.
    """

    def __init__(self, seed: int) -> None:
        self._faults = random.Random()
        self._latency = random.Random()
        self._served: defaultdict[str, int] = defaultdict(int)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Reseed both streams and forget the ``fail_first`` counters."""
        self._faults.seed(seed)
        self._latency.seed(seed + 1)
        self._served.clear()

    def decide(self, model: str, profile: Profile) -> Decision:
        """Scheduled failures first (``fail_first``), then one draw against the rates."""
        seen = self._served[model]
        self._served[model] = seen + 1
        if profile.fail_first is not None and seen < profile.fail_first.n:
            return Decision(status=profile.fail_first.status)
        if not profile.errors and profile.hang_rate == 0.0:
            return _OK
        draw = self._faults.random()
        edge = 0.0
        for status in sorted(profile.errors):
            edge += profile.errors[status]
            if draw < edge:
                return Decision(status=status)
        if draw < edge + profile.hang_rate:
            return _HANG
        return _OK

    def sample_ms(self, dist: LatencyDist) -> float:
        """One sample of ``dist`` in milliseconds."""
        if dist.dist == "fixed":
            return dist.value
        if dist.dist == "uniform":
            assert dist.min is not None and dist.max is not None
            return self._latency.uniform(dist.min, dist.max)
        mu, sigma = dist.lognormal_params()
        value = self._latency.lognormvariate(mu, sigma)
        return min(value, dist.max) if dist.max is not None else value


class Stats:
    """Request counts per model and outcome ("200", "429", "hang", ...) and token totals."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._tokens: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])

    def record(self, model: str, outcome: int | str) -> None:
        self._counts[model][str(outcome)] += 1

    def record_tokens(self, model: str, prompt: int, completion: int) -> None:
        totals = self._tokens[model]
        totals[0] += prompt
        totals[1] += completion

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready counts: ``{"total", "models": {model: {"requests", "by_status"...}}}``."""
        models: dict[str, Any] = {}
        for model, counts in sorted(self._counts.items()):
            prompt, completion = self._tokens.get(model, (0, 0))
            models[model] = {
                "requests": sum(counts.values()),
                "by_status": dict(sorted(counts.items())),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
            }
        return {"total": sum(m["requests"] for m in models.values()), "models": models}
