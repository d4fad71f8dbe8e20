"""Naming a prompt on the command line: a version (``3``, ``v3``), a label
(``production``), or a prompt file path (``prompts/classify.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from llmops.errors import ConfigError
from llmops.prompts.files import PromptFile, load_prompt
from llmops.prompts.store import find_by_hash, resolve_prompt

__all__ = ["PromptRef", "resolve_ref"]


@dataclass(frozen=True)
class PromptRef:
    """A prompt to use: a stored version, or a file not pushed yet (``version`` None)."""

    prompt: PromptFile
    version: int | None
    label: str

    @property
    def content_hash(self) -> str:
        return self.prompt.content_hash


def resolve_ref(session: Session, name: str, ref: str) -> PromptRef:
    """The prompt ``name`` as ``ref`` names it (ValidationError / ConfigError otherwise)."""
    text = ref.strip()
    number = text[1:] if text[:1] in ("v", "V") else text
    if number.isdigit():
        resolved = resolve_prompt(session, name, version=int(number))
        return PromptRef(resolved.prompt, resolved.version, f"v{resolved.version}")
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or path.exists():
        prompt = load_prompt(path)  # ConfigError with file, field, reason
        if prompt.name != name:
            raise ConfigError(str(path), "name", f"expected prompt {name!r}")
        stored = find_by_hash(session, prompt.name, prompt.content_hash)
        version = stored.version if stored is not None else None
        shown = f"v{version}" if version is not None else "not pushed"
        return PromptRef(prompt, version, f"{path} ({shown})")
    resolved = resolve_prompt(session, name, label=text)
    return PromptRef(resolved.prompt, resolved.version, f"{text} (v{resolved.version})")
