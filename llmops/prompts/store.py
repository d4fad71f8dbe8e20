"""The prompt store: immutable versions of prompt files in the ops DB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from llmops.db.models import PromptLabel, PromptVersion
from llmops.errors import ValidationError
from llmops.prompts.files import PromptFile


def register_version(
    session: Session, prompt: PromptFile, *, author: str = "", message: str = ""
) -> PromptVersion:
    """The version holding ``prompt``'s content, created with the next number if new.

    Idempotent: the same content (by hash) always maps to the same version.
    """
    existing = session.exec(
        select(PromptVersion).where(
            PromptVersion.name == prompt.name, PromptVersion.content_hash == prompt.content_hash
        )
    ).first()
    if existing is not None:
        return existing
    latest = session.exec(
        select(func.max(PromptVersion.version)).where(PromptVersion.name == prompt.name)
    ).one()
    version = PromptVersion(
        name=prompt.name,
        version=(latest or 0) + 1,
        content_hash=prompt.content_hash,
        body=prompt.model_dump(mode="json"),
        model_group=prompt.model_group,
        author=author,
        message=message,
    )
    session.add(version)
    session.flush()
    return version


@dataclass(frozen=True)
class ResolvedPrompt:
    """A stored prompt version, ready to render: ``prompt.render(variables)``."""

    name: str
    version: int
    content_hash: str
    prompt: PromptFile


def resolve_prompt(
    session: Session, name: str, *, label: str | None = None, version: int | None = None
) -> ResolvedPrompt:
    """The stored version of prompt ``name`` by explicit version, else by label.

    With neither, the ``production`` label. Unknown names, labels and versions raise
    :class:`~llmops.errors.ValidationError` with what exists instead.
    """
    if version is None:
        wanted = label or "production"
        row = session.get(PromptLabel, (name, wanted))
        if row is None:
            known = session.exec(select(PromptLabel.label).where(PromptLabel.name == name)).all()
            if not known and _latest(session, name) is None:
                raise ValidationError(f"unknown prompt {name!r}")
            have = ", ".join(sorted(known)) or "none"
            raise ValidationError(f"prompt {name!r} has no label {wanted!r} (labels: {have})")
        version = row.version
    stored = get_version(session, name, version)
    return ResolvedPrompt(
        name=name,
        version=stored.version,
        content_hash=stored.content_hash,
        prompt=PromptFile.model_validate(stored.body),
    )


def _latest(session: Session, name: str) -> int | None:
    return session.exec(
        select(func.max(PromptVersion.version)).where(PromptVersion.name == name)
    ).one()


@dataclass(frozen=True)
class Pushed:
    """What ``push`` did with one prompt file."""

    name: str
    version: int
    content_hash: str
    created: bool


def push(
    session: Session, prompts: dict[str, PromptFile], *, author: str, message: str = ""
) -> list[Pushed]:
    """Store every prompt as an immutable version; unchanged content keeps its version."""
    out = []
    for name in sorted(prompts):
        before = _latest(session, name)
        stored = register_version(session, prompts[name], author=author, message=message)
        created = before is None or stored.version > before
        out.append(Pushed(name, stored.version, stored.content_hash, created))
    return out


def get_version(session: Session, name: str, version: int) -> PromptVersion:
    """The stored row of ``name`` at ``version`` (ValidationError naming what exists)."""
    row = session.exec(
        select(PromptVersion).where(PromptVersion.name == name, PromptVersion.version == version)
    ).first()
    if row is None:
        latest = _latest(session, name)
        if latest is None:
            raise ValidationError(f"unknown prompt {name!r}")
        raise ValidationError(f"prompt {name!r} has no version {version} (latest: {latest})")
    return row


def find_by_hash(session: Session, name: str, content_hash: str) -> PromptVersion | None:
    """The stored version of ``name`` holding exactly this content, if any."""
    return session.exec(
        select(PromptVersion).where(
            PromptVersion.name == name, PromptVersion.content_hash == content_hash
        )
    ).first()


@dataclass(frozen=True)
class PromptSummary:
    """One stored prompt: its latest version and where its labels point."""

    name: str
    latest: int
    labels: dict[str, int]
    updated_at: datetime


def list_prompts(session: Session) -> list[PromptSummary]:
    """Every stored prompt, by name."""
    latest: dict[str, tuple[int, datetime]] = {}
    for row in session.exec(select(PromptVersion)).all():
        if row.name not in latest or row.version > latest[row.name][0]:
            latest[row.name] = (row.version, row.created_at)
    labels: dict[str, dict[str, int]] = {}
    for label in session.exec(select(PromptLabel)).all():
        labels.setdefault(label.name, {})[label.label] = label.version
    return [
        PromptSummary(name, v, dict(sorted(labels.get(name, {}).items())), at)
        for name, (v, at) in sorted(latest.items())
    ]


def versions(session: Session, name: str) -> list[PromptVersion]:
    """Every version of ``name``, newest first (ValidationError if there is none)."""
    rows = list(
        session.exec(
            select(PromptVersion)
            .where(PromptVersion.name == name)
            .order_by(col(PromptVersion.version).desc())
        ).all()
    )
    if not rows:
        raise ValidationError(f"unknown prompt {name!r}")
    return rows


def diff(old: PromptFile, new: PromptFile, *, old_label: str, new_label: str) -> str:
    """A unified diff of two prompts as YAML ("" when they are the same)."""
    import difflib

    import yaml

    def lines(prompt: PromptFile) -> list[str]:
        text = yaml.safe_dump(prompt.model_dump(mode="json"), sort_keys=False, width=100)
        return text.splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(old), lines(new), fromfile=old_label, tofile=new_label)
    )


class PromptResolver:
    """:func:`resolve_prompt` on an engine, cached for ``ttl_s`` seconds per (name, label).

    Runtime callers resolve a label on every request; a label move shows up within
    ``ttl_s`` in every process (``invalidate`` makes it immediate in this one).
    """

    def __init__(
        self, engine: Engine, *, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine, self.ttl_s, self.clock = engine, ttl_s, clock
        self._cache: dict[tuple[str, str | None, int | None], tuple[float, ResolvedPrompt]] = {}
        self._lock = threading.Lock()

    def resolve(
        self, name: str, *, label: str | None = None, version: int | None = None
    ) -> ResolvedPrompt:
        key = (name, label, version)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        with Session(self.engine) as session:
            resolved = resolve_prompt(session, name, label=label, version=version)
        with self._lock:
            self._cache[key] = (now, resolved)
        return resolved

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
