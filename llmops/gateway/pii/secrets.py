"""Secrets: API keys, tokens and private keys, found by their documented shapes.

Each kind has a substring that every match contains; the regex only runs when the text
contains it, so a prompt without secrets costs a handful of ``in`` tests.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

_KINDS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    (
        "private_key",  # PEM, through the END line; an unterminated block to its last line
        ("PRIVATE KEY",),
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
            r"(?:.*?-----END \1-----|[A-Za-z0-9+/=\s:,\\-]*)",
            re.DOTALL,
        ),
    ),
    ("anthropic", ("sk-ant-",), re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}")),
    # sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...
    ("openai", ("sk-",), re.compile(r"(?<![\w-])sk-(?!ant-)[A-Za-z0-9_-]{20,}")),
    ("aws_access_key_id", ("AKIA", "ASIA"), re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    (
        "aws_secret_access_key",  # 40 base64 characters: only recognisable by their label
        ("ecret", "ECRET"),
        re.compile(
            r"(?i)(?:aws[ _.-]?secret[ _.-]?(?:access[ _.-]?)?key|secret[ _.-]?access[ _.-]?key)"
            r"[\"']?\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
    ),
    (
        "github",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    ),
    (
        "stripe",
        ("_live_", "_test_", "whsec_"),
        re.compile(
            r"\b(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,247}|whsec_[A-Za-z0-9]{20,})\b"
        ),
    ),
    ("slack", ("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("google_api_key", ("AIza",), re.compile(r"\bAIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")),
    ("jwt", ("eyJ",), re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")),
)

#: The secret kinds reported in ``Finding.kind`` (all under the entity ``SECRET``).
SECRET_KINDS: tuple[str, ...] = tuple(kind for kind, _, _ in _KINDS)


def _jwt_header(token: str) -> dict[str, object] | None:
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    return header if isinstance(header, dict) else None


def find_secrets(text: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, kind)`` of every secret in ``text``, overlaps not yet resolved."""
    for kind, needles, pattern in _KINDS:
        for needle in needles:
            if needle in text:
                break
        else:
            continue
        for m in pattern.finditer(text):
            start, end = m.span("value") if "value" in pattern.groupindex else m.span()
            if kind == "jwt":
                header = _jwt_header(m.group())
                if header is None or "alg" not in header:
                    continue
            elif kind == "private_key":
                while text[end - 1].isspace():
                    end -= 1
            yield start, end, kind
