"""The prompt store: immutable versions of prompt files in the ops DB."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from llmops.db.models import PromptVersion
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
