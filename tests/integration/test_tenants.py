"""Tenants and API keys on each backend: keys shown once, stored hashed, cached briefly."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from llmops.db.engine import make_engine
from llmops.db.models import Tenant
from llmops.errors import AuthError, ValidationError
from llmops.tenants import (
    AUTH_CACHE_TTL_S,
    TenantAuthenticator,
    authenticate,
    create_tenant,
    hash_key,
    list_tenants,
    revoke,
    rotate_key,
)

KEY_SHAPE = re.compile(r"llm_[A-Za-z0-9_-]{40}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def other_engine(migrated_db_url: str) -> Iterator[Engine]:
    """A second engine on the same database, as another process would have."""
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


def stored(engine: Engine) -> list[tuple[str, str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, api_key_hash, api_key_prefix FROM tenants"))
        return [(r[0], r[1], r[2]) for r in rows]


def test_create_returns_the_key_once_and_stores_only_its_hash(db_engine: Engine) -> None:
    tenant, key = create_tenant(db_engine, "acme", "Acme Corp", "cus_123", "pro")

    assert KEY_SHAPE.fullmatch(key)
    assert (tenant.id, tenant.name, tenant.stripe_customer_id, tenant.plan, tenant.active) == (
        "acme",
        "Acme Corp",
        "cus_123",
        "pro",
        True,
    )
    ((tenant_id, digest, prefix),) = stored(db_engine)
    assert tenant_id == "acme" and digest == hash_key(key)
    assert prefix == key[:12] and key[12:] not in (prefix or "")
    assert authenticate(db_engine, key).id == "acme"
    _, second = create_tenant(db_engine, "globex", "Globex")
    assert second != key and authenticate(db_engine, second).id == "globex"


def test_duplicate_and_invalid_ids_are_validation_errors(db_engine: Engine) -> None:
    create_tenant(db_engine, "acme", "Acme")
    with pytest.raises(ValidationError, match="already exists"):
        create_tenant(db_engine, "acme", "Acme again")
    with pytest.raises(ValidationError, match="invalid tenant id"):
        create_tenant(db_engine, "Acme Corp", "Acme")
    with pytest.raises(ValidationError, match="name"):
        create_tenant(db_engine, "blank", "   ")
    assert [t.id for t in list_tenants(db_engine)] == ["acme"]


def test_unknown_and_revoked_keys_are_refused(db_engine: Engine) -> None:
    _, key = create_tenant(db_engine, "acme", "Acme")
    with pytest.raises(AuthError, match="invalid API key"):
        authenticate(db_engine, "llm_" + "z" * 40)
    assert authenticate(db_engine, key).id == "acme"  # now cached

    revoked = revoke(db_engine, "acme")
    assert revoked.active is False
    with pytest.raises(AuthError, match="revoked"):
        authenticate(db_engine, key)  # revoking cleared this process's cache
    revoke(db_engine, "acme")  # idempotent
    with pytest.raises(ValidationError, match="unknown tenant"):
        revoke(db_engine, "nobody")


def test_rotation_replaces_the_key(db_engine: Engine) -> None:
    _, old = create_tenant(db_engine, "acme", "Acme")
    authenticate(db_engine, old)
    new = rotate_key(db_engine, "acme")

    assert KEY_SHAPE.fullmatch(new) and new != old
    with pytest.raises(AuthError):
        authenticate(db_engine, old)
    assert authenticate(db_engine, new).id == "acme"
    ((_, digest, prefix),) = stored(db_engine)
    assert (digest, prefix) == (hash_key(new), new[:12])
    revoke(db_engine, "acme")
    with pytest.raises(ValidationError, match="revoked"):
        rotate_key(db_engine, "acme")
    with pytest.raises(ValidationError, match="unknown tenant"):
        rotate_key(db_engine, "nobody")


def test_hits_are_cached_for_the_ttl_by_digest_only(
    db_engine: Engine, other_engine: Engine
) -> None:
    _, key = create_tenant(db_engine, "acme", "Acme")
    clock = Clock()
    auth = TenantAuthenticator(db_engine, clock=clock)
    assert auth.authenticate(key).id == "acme"
    assert key not in repr(auth._cache) and hash_key(key) in auth._cache

    revoke(other_engine, "acme")  # as another process would: this cache is not told
    clock.now += AUTH_CACHE_TTL_S - 0.1
    assert auth.authenticate(key).id == "acme"
    clock.now += 0.2
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate(key)


async def test_async_lookup_matches_sync(db_engine: Engine) -> None:
    _, key = create_tenant(db_engine, "acme", "Acme")
    auth = TenantAuthenticator(db_engine)
    tenant = await auth.authenticate_async(key)
    assert isinstance(tenant, Tenant) and tenant.id == "acme"
    assert (await auth.authenticate_async(key)) is tenant  # the cached object
    with pytest.raises(AuthError):
        await auth.authenticate_async("llm_" + "q" * 40)


def test_list_is_oldest_first_without_keys(db_engine: Engine) -> None:
    for tenant_id in ("zeta", "alpha", "mid"):
        create_tenant(db_engine, tenant_id, tenant_id.title())
    tenants = list_tenants(db_engine)
    assert [t.id for t in tenants] == ["zeta", "alpha", "mid"]
    assert all(t.api_key_prefix and t.api_key_hash for t in tenants)
