"""Tenant ids, key shapes and the refusals that need no database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from llmops.db.engine import make_engine
from llmops.errors import AuthError, ValidationError
from llmops.tenants import TenantAuthenticator, hash_key, slugify, validate_tenant_id


@pytest.mark.parametrize("tenant_id", ["acme", "a", "acme-corp", "team_7", "0x1", "a" * 64])
def test_slug_ids_are_accepted(tenant_id: str) -> None:
    assert validate_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize(
    "tenant_id", ["", "Acme", "acme corp", "-acme", "acme-", "acme/1", "é", "a" * 65]
)
def test_other_ids_are_refused(tenant_id: str) -> None:
    with pytest.raises(ValidationError, match="invalid tenant id"):
        validate_tenant_id(tenant_id)


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Acme Corp.", "acme-corp"), ("  Globex  Corporation ", "globex-corporation"), ("!!!", "")],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_key_hash_is_sha256_hex() -> None:
    digest = hash_key("llm_" + "a" * 40)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != hash_key("llm_" + "a" * 39 + "b")


@pytest.fixture
def unusable_engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine whose every query fails: proves a refusal needed no lookup."""
    engine = make_engine(f"sqlite:///{tmp_path}")  # a directory, not a database file
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("sk-" + "a" * 41, "invalid API key"),
        ("llm_" + "a" * 39, "invalid API key"),
        ("llm_" + "a" * 39 + "!", "invalid API key"),
    ],
)
async def test_malformed_keys_are_refused_without_a_lookup(
    unusable_engine: Engine, key: str | None, message: str
) -> None:
    auth = TenantAuthenticator(unusable_engine)
    with pytest.raises(AuthError, match=message):
        auth.authenticate(key)
    with pytest.raises(AuthError, match=message):
        await auth.authenticate_async(key)
