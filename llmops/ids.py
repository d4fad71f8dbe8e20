"""Identifiers and clocks, generated in one place."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


# Ids need uniqueness, not secrecy: a generator seeded from the OS once per process (and
# again in a forked child) avoids an os.urandom system call per id, which is slow on VMs.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A time-ordered unique id such as ``req_01jd8w3k5f0b6r9t2m4c7x1q8z``.

    48 bits of milliseconds then 80 random bits, Crockford base32 (a ULID body), so ids
    sort by creation time and never collide in practice across processes.
    """
    value = (int(time.time() * 1000) << 80) | _rng.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def new_trace_id() -> str:
    """A W3C trace id: 32 lowercase hex digits, never all zero."""
    return f"{_rng.getrandbits(128) or 1:032x}"
