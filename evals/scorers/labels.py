"""Custom scorers for the ticket-triage suites (``labels.known_label`` in a suite file).

A custom scorer is a function ``f(output, item, **params)`` returning a bool, a number in
[0, 1], ``(number, reason)``, or ``{"score", "passed", "reason"}``.
"""

from __future__ import annotations

from typing import Any


def known_label(output: str, item: Any, labels: list[str]) -> tuple[float, str]:
    """1 when the answer is exactly one of ``labels`` (a format check, not correctness)."""
    answer = output.strip().strip(".").casefold()
    if answer in {label.casefold() for label in labels}:
        return 1.0, f"{answer!r} is a known label"
    return 0.0, f"{output.strip()[:40]!r} is not one of {', '.join(labels)}"
