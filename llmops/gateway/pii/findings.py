"""What detectors report (:class:`Finding`), and how overlapping findings are resolved."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

EMAIL, PHONE, CARD, IBAN, SSN, IP, SECRET = "EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET"
BUILTIN_ENTITIES: tuple[str, ...] = (EMAIL, PHONE, CARD, IBAN, SSN, IP, SECRET)

#: Tie-break between overlapping findings of equal length: lower wins. Checksummed and
#: structural formats beat the looser ones; tenant patterns (rank 0) beat everything.
_RANK = {SECRET: 1, IBAN: 2, CARD: 3, SSN: 4, EMAIL: 5, IP: 6, PHONE: 7}


@dataclass(frozen=True, slots=True)
class Finding:
    """One entity found in a text: ``text[start:end] == value``. Never log ``value``."""

    entity: str
    start: int
    end: int
    value: str = field(repr=False)
    #: Canonical form (lower-cased e-mail, E.164 phone, bare digits): equal entities with
    #: equal ``normalized`` share a placeholder and a hash token.
    normalized: str = field(repr=False)
    kind: str = ""  # finer type where there is one, e.g. the secret kind "openai"
    replacement: str = ""  # what the redactor put in its place


def finding(
    entity: str, text: str, start: int, end: int, normalized: str, kind: str = ""
) -> Finding:
    """A :class:`Finding` for ``text[start:end]``."""
    return Finding(entity, start, end, text[start:end], normalized, kind)


def isolated(text: str, start: int, end: int) -> bool:
    """True unless the number is glued to a code: ``ORD-2024-001234``, ``v1.2``, ``A12345``."""
    if start > 0:
        c = text[start - 1]
        if c.isalnum() or c == "_" or (c in "-./" and start > 1 and text[start - 2].isalnum()):
            return False
    if end < len(text):
        c = text[end]
        if c.isalnum() or c == "_":
            return False
        if c in "-./:" and end + 1 < len(text) and text[end + 1].isalnum():
            return False
    return True


def resolve(findings: list[Finding]) -> list[Finding]:
    """Drop overlapping findings: the longest wins, then the lower rank; sorted by start."""
    if len(findings) < 2:
        return findings
    ordered = sorted(findings, key=lambda f: (f.start - f.end, _RANK.get(f.entity, 0), f.start))
    starts: list[int] = []
    kept: list[Finding] = []
    for f in ordered:
        i = bisect_left(starts, f.start)
        if i > 0 and kept[i - 1].end > f.start:
            continue
        if i < len(kept) and kept[i].start < f.end:
            continue
        starts.insert(i, f.start)
        kept.insert(i, f)
    return kept
