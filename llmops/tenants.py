"""Tenants and their API keys: create, rotate, revoke, list, and authenticate a key.

A key is ``llm_`` followed by 40 URL-safe random characters. It is returned once, when it is
made; the database keeps only its SHA-256 hex digest (looked up by equality, so no
constant-time comparison is needed) and a short prefix to tell keys apart in listings.

:func:`authenticate` caches successful lookups for a few seconds, keyed by the digest, never
by the plaintext. Revoking or rotating a key clears this process's cache at once; another
process (a second gateway worker) may accept the old key for up to ``AUTH_CACHE_TTL_S``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.db.engine import session_scope
from llmops.db.models import Tenant
from llmops.errors import AuthError, ValidationError

__all__ = [
    "AUTH_CACHE_TTL_S",
    "KEY_PREFIX",
    "TenantAuthenticator",
    "authenticate",
    "authenticator_for",
    "create_tenant",
    "hash_key",
    "list_tenants",
    "revoke",
    "rotate_key",
    "slugify",
    "validate_tenant_id",
]

KEY_PREFIX = "llm_"
_KEY_RANDOM_BYTES = 30  # 30 bytes are exactly 40 URL-safe base64 characters
_KEY_LENGTH = len(KEY_PREFIX) + 40
_DISPLAY_PREFIX_LENGTH = 12  # "llm_" + 8 random characters: enough to tell keys apart
AUTH_CACHE_TTL_S = 5.0
_CACHE_MAX_ENTRIES = 10_000

_TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?")
_KEY_CHARS = re.compile(r"[A-Za-z0-9_-]{40}")


def validate_tenant_id(tenant_id: str) -> str:
    """Return ``tenant_id`` if it is a lowercase slug (a-z, 0-9, ``-``, ``_``; 1-64 chars)."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise ValidationError(
            f"invalid tenant id {tenant_id!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return tenant_id


def slugify(name: str) -> str:
    """A tenant id derived from a display name: ``"Acme Corp."`` -> ``"acme-corp"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:64].rstrip("-")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_RANDOM_BYTES)


def create_tenant(
    engine: Engine,
    tenant_id: str,
    name: str,
    stripe_customer_id: str | None = None,
    plan: str | None = None,
) -> tuple[Tenant, str]:
    """Create a tenant with a new API key; return it and the plaintext key (shown once)."""
    validate_tenant_id(tenant_id)
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationError("tenant name must be 1-200 characters")
    key = _new_key()
    tenant = Tenant(
        id=tenant_id,
        name=name,
        api_key_hash=hash_key(key),
        api_key_prefix=key[:_DISPLAY_PREFIX_LENGTH],
        stripe_customer_id=stripe_customer_id or None,
        plan=plan or None,
    )
    try:
        with session_scope(engine) as session:
            if session.get(Tenant, tenant_id) is not None:
                raise ValidationError(f"tenant {tenant_id!r} already exists")
            session.add(tenant)
    except IntegrityError as exc:  # created concurrently between the check and the insert
        raise ValidationError(f"tenant {tenant_id!r} already exists") from exc
    return tenant, key


def rotate_key(engine: Engine, tenant_id: str) -> str:
    """Replace a tenant's API key; the old key stops working. Returns the new key (once)."""
    key = _new_key()
    with session_scope(engine) as session:
        tenant = _get(session, tenant_id)
        if not tenant.active:
            raise ValidationError(f"tenant {tenant_id!r} is revoked; its key cannot be rotated")
        tenant.api_key_hash = hash_key(key)
        tenant.api_key_prefix = key[:_DISPLAY_PREFIX_LENGTH]
        session.add(tenant)
    _forget(engine, tenant_id)
    return key


def revoke(engine: Engine, tenant_id: str) -> Tenant:
    """Deactivate a tenant: its key is refused from now on (safe to run twice)."""
    with session_scope(engine) as session:
        tenant = _get(session, tenant_id)
        tenant.active = False
        session.add(tenant)
    _forget(engine, tenant_id)
    return tenant


def list_tenants(engine: Engine) -> list[Tenant]:
    """Every tenant, oldest first."""
    with session_scope(engine) as session:
        stmt = select(Tenant).order_by(col(Tenant.created_at), col(Tenant.id))
        return list(session.exec(stmt).all())


def authenticate(engine: Engine, key: str | None) -> Tenant:
    """The active tenant owning ``key``; :class:`AuthError` if missing, unknown or revoked."""
    return authenticator_for(engine).authenticate(key)


def _get(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise ValidationError(f"unknown tenant {tenant_id!r}")
    return tenant


class TenantAuthenticator:
    """Resolves API keys to tenants, caching hits for ``ttl_s`` seconds (by digest only)."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = AUTH_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, Tenant]] = {}
        self._lock = threading.Lock()

    def authenticate(self, key: str | None) -> Tenant:
        """The active tenant owning ``key`` (a database lookup unless recently seen)."""
        digest = _digest_or_raise(key)
        tenant = self._cached(digest)
        return tenant if tenant is not None else self._lookup(digest)

    async def authenticate_async(self, key: str | None) -> Tenant:
        """:meth:`authenticate` for an event loop: a cache miss queries in a worker thread."""
        digest = _digest_or_raise(key)
        tenant = self._cached(digest)
        if tenant is None:
            tenant = await asyncio.to_thread(self._lookup, digest)
        return tenant

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget cached keys of ``tenant_id`` (every tenant when ``None``)."""
        with self._lock:
            if tenant_id is None:
                self._cache.clear()
            else:
                for digest in [d for d, (_, t) in self._cache.items() if t.id == tenant_id]:
                    del self._cache[digest]

    def _cached(self, digest: str) -> Tenant | None:
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        return None

    def _lookup(self, digest: str) -> Tenant:
        with session_scope(self.engine) as session:
            tenant = session.exec(select(Tenant).where(Tenant.api_key_hash == digest)).first()
        if tenant is None:
            raise AuthError("invalid API key")
        if not tenant.active:
            raise AuthError("this API key has been revoked")
        with self._lock:
            if len(self._cache) >= _CACHE_MAX_ENTRIES:
                self._cache.clear()  # bounded; the next calls simply look up again
            self._cache[digest] = (self.clock() + self.ttl_s, tenant)
        return tenant


def _digest_or_raise(key: str | None) -> str:
    if not key:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    # Anything not shaped like one of our keys is refused without a database round trip.
    if (
        len(key) != _KEY_LENGTH
        or not key.startswith(KEY_PREFIX)
        or not _KEY_CHARS.fullmatch(key, len(KEY_PREFIX))
    ):
        raise AuthError("invalid API key")
    return hash_key(key)


#: One authenticator (and so one cache) per engine, so that revoking or rotating through an
#: engine clears what this process cached for it. Weak keys: a disposed engine is dropped.
_authenticators: weakref.WeakKeyDictionary[Engine, TenantAuthenticator] = (
    weakref.WeakKeyDictionary()
)
_authenticators_lock = threading.Lock()


def authenticator_for(engine: Engine) -> TenantAuthenticator:
    """The process-wide :class:`TenantAuthenticator` of ``engine``."""
    with _authenticators_lock:
        auth = _authenticators.get(engine)
        if auth is None:
            auth = _authenticators[engine] = TenantAuthenticator(engine)
        return auth


def _forget(engine: Engine, tenant_id: str) -> None:
    auth = _authenticators.get(engine)
    if auth is not None:
        auth.invalidate(tenant_id)
