"""Job callbacks: POST the finished job to its callback URL, signed, retried, recorded.

The body is the job's public view wrapped in an event (``job.completed`` or
``job.dead``), serialized once; the signature is HMAC-SHA256 over exactly those bytes with
the tenant's callback secret, sent as ``X-LLMOps-Signature: sha256=<hex>``. A receiver
recomputes it over the raw body (see :func:`verify`) and should treat ``event_id`` as an
idempotency key: delivery is at least once.

Each tenant has its own random secret (table ``tenant_callback_secrets``), made the first
time one of its jobs has a callback URL; ``llmops jobs callback-secret`` shows or rotates
it. A delivery that fails (no answer, or any status but 2xx) is retried with exponential
backoff up to :data:`MAX_DELIVERIES` times; every attempt's status and error is recorded
on the job (``callback_status`` pending | delivered | failed). Deliveries are claimed with
a short lease on ``callback_next_at`` so several workers never send the same one at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmops.db.engine import session_scope
from llmops.db.models import Job, TenantCallbackSecret
from llmops.ids import utcnow
from llmops.queue.views import job_view

__all__ = [
    "MAX_DELIVERIES",
    "SIGNATURE_HEADER",
    "deliver_due",
    "ensure_secret",
    "rotate_secret",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-LLMOps-Signature"
MAX_DELIVERIES = 8
DELIVERY_LEASE_S = 60.0
_JOBS = Job.__table__  # type: ignore[attr-defined]


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """True when ``header`` is the signature of ``body`` (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, body), header)


def ensure_secret(engine: Engine, tenant_id: str) -> str:
    """The tenant's callback secret, created on first use."""
    with Session(engine) as session:
        row = session.get(TenantCallbackSecret, tenant_id)
        if row is not None:
            return row.secret
    secret = "whsec_" + secrets.token_urlsafe(32)
    try:
        with session_scope(engine) as session:
            session.add(TenantCallbackSecret(tenant_id=tenant_id, secret=secret))
    except IntegrityError:  # made concurrently: use that one
        with Session(engine) as session:
            row = session.get(TenantCallbackSecret, tenant_id)
            assert row is not None
            return row.secret
    return secret


def rotate_secret(engine: Engine, tenant_id: str) -> str:
    """A new callback secret for the tenant; the old one stops signing at once."""
    ensure_secret(engine, tenant_id)
    secret = "whsec_" + secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        row = session.get(TenantCallbackSecret, tenant_id)
        assert row is not None
        row.secret = secret
        row.created_at = utcnow()
        session.add(row)
    return secret


def event_body(job: dict[str, Any], now: datetime) -> bytes:
    """The bytes POSTed (and signed) for a finished job."""
    event = {
        "event_id": f"{job['id']}:{job['status']}:{job['attempts']}",
        "type": f"job.{job['status']}",
        "created_at": now.isoformat(),
        "job": job,
    }
    return orjson.dumps(event)


async def deliver_due(
    engine: Engine,
    client: httpx.AsyncClient,
    *,
    limit: int = 50,
    base_s: float = 2.0,
    max_s: float = 600.0,
) -> int:
    """Send the callbacks that are due; return how many were delivered (2xx)."""
    claimed = await asyncio.to_thread(_claim_due, engine, limit)
    if not claimed:
        return 0
    answers = await asyncio.gather(*(_send(client, d) for d in claimed))
    outcomes = list(zip(claimed, answers, strict=True))
    await asyncio.to_thread(_record, engine, outcomes, base_s, max_s)
    return sum(1 for status, _ in answers if status is not None and 200 <= status < 300)


@dataclass(frozen=True)
class _Delivery:
    job_id: str
    url: str
    body: bytes
    signature: str
    attempt: int


def _claim_due(engine: Engine, limit: int) -> list[_Delivery]:
    """Due deliveries, each taken with a short lease so no other worker sends it now."""
    now = utcnow()
    with Session(engine) as session:
        due = session.exec(
            select(Job)
            .where(Job.callback_status == "pending", col(Job.callback_next_at) <= now)
            .order_by(col(Job.callback_next_at))
            .limit(limit)
        ).all()
        secrets_by_tenant: dict[str, str] = {}
        deliveries: list[_Delivery] = []
        for job in due:
            taken = session.connection().execute(
                update(_JOBS)
                .where(
                    _JOBS.c.id == job.id,
                    _JOBS.c.callback_status == "pending",
                    _JOBS.c.callback_next_at == job.callback_next_at,
                )
                .values(callback_next_at=now + timedelta(seconds=DELIVERY_LEASE_S))
            )
            session.commit()
            if taken.rowcount != 1 or job.callback_url is None:
                continue
            if job.tenant_id not in secrets_by_tenant:
                secrets_by_tenant[job.tenant_id] = ensure_secret(engine, job.tenant_id)
            body = event_body(job_view(job), now)
            deliveries.append(
                _Delivery(
                    job.id,
                    job.callback_url,
                    body,
                    sign(secrets_by_tenant[job.tenant_id], body),
                    job.callback_attempts + 1,
                )
            )
    return deliveries


async def _send(client: httpx.AsyncClient, delivery: _Delivery) -> tuple[int | None, str | None]:
    """POST one delivery: (HTTP status or None, error or None)."""
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: delivery.signature,
        "X-LLMOps-Job-Id": delivery.job_id,
        "X-LLMOps-Delivery-Attempt": str(delivery.attempt),
    }
    try:
        response = await client.post(delivery.url, content=delivery.body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def _record(
    engine: Engine,
    results: list[tuple[_Delivery, tuple[int | None, str | None]]],
    base_s: float,
    max_s: float,
) -> None:
    now = utcnow()
    with engine.begin() as conn:
        for delivery, (status, error) in results:
            values: dict[str, Any] = {
                "callback_attempts": delivery.attempt,
                "callback_http_status": status,
                "callback_error": error,
            }
            if error is None:
                values.update(callback_status="delivered", callback_delivered_at=now)
            elif delivery.attempt >= MAX_DELIVERIES:
                values.update(callback_status="failed", callback_next_at=None)
            else:
                delay = min(max_s, base_s * 2 ** (delivery.attempt - 1))
                delay = delay / 2 + random.uniform(0, delay / 2)
                values["callback_next_at"] = now + timedelta(seconds=delay)
            conn.execute(
                update(_JOBS)
                .where(_JOBS.c.id == delivery.job_id, _JOBS.c.callback_status == "pending")
                .values(**values)
            )
