"""The prompt store: immutable versions of prompt files in the ops DB."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

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
    stored = session.exec(
        select(PromptVersion).where(PromptVersion.name == name, PromptVersion.version == version)
    ).first()
    if stored is None:
        latest = _latest(session, name)
        if latest is None:
            raise ValidationError(f"unknown prompt {name!r}")
        raise ValidationError(f"prompt {name!r} has no version {version} (latest: {latest})")
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
