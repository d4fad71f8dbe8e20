"""The prompt store: immutable versions and resolution by label or version."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from llmops.db.models import PromptLabel
from llmops.errors import ValidationError
from llmops.prompts.files import PromptFile
from llmops.prompts.store import register_version, resolve_prompt


def _prompt(text: str) -> PromptFile:
    return PromptFile(
        name="greet",
        model_group="chat-small",
        messages=[{"role": "user", "content": text}],
    )


def test_resolve_by_label_and_version(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        v1 = register_version(session, _prompt("Hello {{ who }}"))
        v2 = register_version(session, _prompt("Hi {{ who }}!"))
        assert (v1.version, v2.version) == (1, 2)
        assert register_version(session, _prompt("Hello {{ who }}")).version == 1
        session.add(PromptLabel(name="greet", label="production", version=1))
        session.commit()

        prod = resolve_prompt(session, "greet")
        assert prod.version == 1
        assert prod.prompt.render({"who": "Ada"}) == [{"role": "user", "content": "Hello Ada"}]
        assert resolve_prompt(session, "greet", version=2).prompt.render({"who": "Ada"}) == [
            {"role": "user", "content": "Hi Ada!"}
        ]
        with pytest.raises(ValidationError, match="missing variables: who"):
            prod.prompt.render({})


def test_resolve_unknowns_say_what_exists(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        register_version(session, _prompt("Hello"))
        session.add(PromptLabel(name="greet", label="staging", version=1))
        session.commit()
        with pytest.raises(ValidationError, match="unknown prompt 'nope'"):
            resolve_prompt(session, "nope")
        with pytest.raises(ValidationError, match=r"no label 'production' \(labels: staging\)"):
            resolve_prompt(session, "greet")
        with pytest.raises(ValidationError, match=r"no version 7 \(latest: 1\)"):
            resolve_prompt(session, "greet", version=7)
