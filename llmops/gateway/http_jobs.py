"""``POST /v1/jobs`` and ``GET /v1/jobs/{id}``: the job queue over the HTTP gateway.

Tenant-authenticated like the chat route (``Authorization: Bearer <key>``). The body is a
:class:`llmops.queue.spec.JobSpec` as JSON; ``feature`` may come from ``X-LLMOps-Feature``,
``action_id`` from ``X-LLMOps-Action-Id`` and ``idempotency_key`` from ``Idempotency-Key``.
A new job answers 201, an idempotent repeat 200 with the same job; a job is visible only
to the tenant that owns it (another tenant's id is 404). Errors use OpenAI's error body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from llmops.errors import ValidationError
from llmops.gateway.config import GatewayConfig
from llmops.gateway.http_errors import error_response, http_error

__all__ = ["MAX_JOB_BODY_BYTES", "jobs_router"]

#: Bodies larger than this are refused before parsing (the payload limit is checked after).
MAX_JOB_BODY_BYTES = 4 * 1024 * 1024
_JSON = "application/json"


def jobs_router(
    engine: Engine,
    authenticate: Any,
    config: GatewayConfig,
    *,
    max_payload_bytes: int | None = None,
) -> APIRouter:
    """The job routes for ``create_app`` (``authenticate`` as there)."""
    from llmops.gateway.http import _bearer, _read_body
    from llmops.queue.jobs import enqueue, get_job

    if max_payload_bytes is None:
        from llmops.settings import get_settings

        max_payload_bytes = get_settings().queue_max_payload_bytes
    limit = max_payload_bytes

    async def submit(request: Request) -> Response:
        try:
            headers = request.headers
            tenant = await authenticate(_bearer(headers.get("authorization")))
            raw = await _read_body(request, MAX_JOB_BODY_BYTES)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ValidationError(f"request body is not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise ValidationError("request body must be a JSON object")
            for key, header in (
                ("feature", "x-llmops-feature"),
                ("action_id", "x-llmops-action-id"),
                ("idempotency_key", "idempotency-key"),
            ):
                if key not in body and headers.get(header):
                    body[key] = headers[header]
            submitted = await asyncio.to_thread(
                enqueue, engine, config, tenant.id, body, max_payload_bytes=limit
            )
        except Exception as exc:  # BaseException (cancellation) propagates untouched
            return error_response(http_error(exc))
        job = submitted.job
        return Response(
            orjson.dumps(job),
            status_code=201 if submitted.created else 200,
            media_type=_JSON,
            headers={"Location": f"/v1/jobs/{job['id']}"},
        )

    async def status(request: Request) -> Response:
        try:
            tenant = await authenticate(_bearer(request.headers.get("authorization")))
            job_id = request.path_params["job_id"]
            job = await asyncio.to_thread(get_job, engine, job_id, tenant_id=tenant.id)
        except Exception as exc:
            return error_response(http_error(exc))
        return Response(orjson.dumps(job), media_type=_JSON)

    router = APIRouter()
    router.add_route("/v1/jobs", submit, methods=["POST"])
    router.add_route("/v1/jobs/{job_id}", status, methods=["GET"])
    return router
