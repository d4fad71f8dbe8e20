"""The queue's Python API: submit a job, read it back.

``enqueue`` validates the job (see :mod:`llmops.queue.spec`), stores it, and returns the
public view; the same idempotency key of the same tenant returns the job it made first.
``get_job`` returns a job only to the tenant that owns it (``tenant_id=None``: an
operator's view of any job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from llmops.db.engine import session_scope
from llmops.db.models import Job, Tenant
from llmops.errors import ValidationError
from llmops.gateway.config import GatewayConfig
from llmops.ids import new_id
from llmops.queue.callbacks import ensure_secret
from llmops.queue.spec import JobSpec, build_payload
from llmops.queue.views import job_view

__all__ = ["JobNotFound", "Submitted", "enqueue", "get_job"]

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


class JobNotFound(ValidationError):
    """No such job for this tenant (HTTP 404)."""

    status = 404
    code = "job_not_found"


@dataclass(frozen=True)
class Submitted:
    """The job's public view, and whether this call created it (False: idempotent hit)."""

    job: dict[str, Any]
    created: bool


def enqueue(
    engine: Engine,
    config: GatewayConfig,
    tenant_id: str,
    spec: JobSpec | dict[str, Any],
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Submitted:
    """Validate and store a job for ``tenant_id``; see the module docstring."""
    if not isinstance(spec, JobSpec):
        spec = JobSpec.parse(spec)
    with Session(engine) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or not tenant.active:
            raise ValidationError(f"unknown or revoked tenant {tenant_id!r}")
        if spec.idempotency_key is not None:
            existing = _by_key(session, tenant_id, spec.idempotency_key)
            if existing is not None:
                return Submitted(job_view(existing), created=False)
        payload = build_payload(session, config, spec, max_bytes=max_payload_bytes)
    if spec.callback_url is not None:
        ensure_secret(engine, tenant_id)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        feature_id=spec.feature,
        priority=spec.priority,
        payload=payload,
        idempotency_key=spec.idempotency_key,
        max_attempts=spec.max_attempts,
        not_before=spec.not_before,
        callback_url=spec.callback_url,
        action_id=spec.action_id,
        history=[],
    )
    try:
        with session_scope(engine) as session:
            session.add(job)
    except IntegrityError:
        # The same key was submitted concurrently: the first insert wins.
        if spec.idempotency_key is None:
            raise
        with Session(engine) as session:
            existing = _by_key(session, tenant_id, spec.idempotency_key)
        if existing is None:
            raise
        return Submitted(job_view(existing), created=False)
    return Submitted(job_view(job), created=True)


def get_job(engine: Engine, job_id: str, *, tenant_id: str | None) -> dict[str, Any]:
    """The public view of a job; :class:`JobNotFound` for another tenant's job."""
    with Session(engine) as session:
        job = session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise JobNotFound(f"no job {job_id!r}")
    return job_view(job)


def _by_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.exec(
        select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    ).first()
