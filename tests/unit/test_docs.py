"""The runbooks: one per alert kind, and every ``llmops`` command they give exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from llmops.alerts import KINDS
from llmops.cli import app

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
DOCS = [*sorted(RUNBOOKS.glob("*.md")), ROOT / "README.md"]


def test_every_alert_kind_has_a_runbook() -> None:
    for kind in KINDS:
        assert (RUNBOOKS / f"{kind.replace('_', '-')}.md").is_file(), kind
    for name in ("pii-incident", "scaling-out"):
        assert (RUNBOOKS / f"{name}.md").is_file()


_FENCED = r"^\s*(?:\$ )?llmops ([a-z][a-z\- ]*[a-z])"
_INLINE = r"`llmops ([a-z][^`]*)`"


def _commands(path: Path) -> list[str]:
    """``llmops ...`` in fenced code blocks (at a line's start) and in inline code spans."""
    found, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        pattern = (
            r"^\s*(?:\$ )?llmops ([a-z][a-z\- ]*[a-z])" if fenced else r"`llmops ([a-z][^`]*)`"
        )
        # In tables, alternatives read `a\|b`: check the command up to the first one.
        found += [re.split(r"\\?\|", m.group(1))[0] for m in re.finditer(pattern, line)]
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_llmops_commands_in_docs_exist(doc: Path) -> None:
    root = typer.main.get_command(app)
    for command in _commands(doc):
        node: Any = root
        for word in shlex.split(command):
            if word.startswith("-"):
                break
            if not _is_group(node):
                break  # a leaf command: the rest are its arguments
            sub = node.get_command(None, word)
            assert sub is not None, f"{doc.name}: `llmops {command}`: no command {word!r}"
            node = sub
        assert not _is_group(node), f"{doc.name}: `llmops {command}` is a group"


def _is_group(node: Any) -> bool:
    """Typer's groups (its own Click) have ``list_commands``; leaf commands do not."""
    return hasattr(node, "list_commands")
