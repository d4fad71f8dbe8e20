"""Identifiers and clocks, generated in one place."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A time-ordered unique id such as ``req_01jd8w3k5f0b6r9t2m4c7x1q8z``.

    48 bits of milliseconds then 80 random bits, Crockford base32 (a ULID body), so ids
    sort by creation time and never collide in practice across processes.
    """
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
