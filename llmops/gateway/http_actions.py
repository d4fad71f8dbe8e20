"""``POST /v1/actions/{id}/outcome``: record whether a user action succeeded.

Body ``{"outcome": "success" | "failure", "detail": "..."}``, authenticated with the
tenant's API key like every gateway route. 200 with the stored outcome (also when the same
outcome is posted again), 409 when the action already has the other outcome (outcomes are
final), 400 on a bad body, 401 on a bad key. Included by :mod:`llmops.gateway.http`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from llmops.db.engine import session_scope
from llmops.errors import AuthError, ValidationError

__all__ = ["actions_router"]


def _error(status: int, message: str, code: str) -> Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def actions_router(engine: Engine, authenticate: Any) -> APIRouter:
    """The router; ``authenticate`` is the app's ``Authorization`` header to tenant lookup."""
    from llmops.metering.actions import ActionConflict, record_action_outcome

    router = APIRouter()

    def record(tenant_id: str, action_id: str, outcome: str, detail: str | None) -> Any:
        with session_scope(engine) as session:
            row, created = record_action_outcome(
                session, tenant_id, action_id, outcome, "api", detail=detail
            )
            return {
                "object": "action.outcome",
                "action_id": row.action_id,
                "outcome": row.outcome,
                "source": row.source,
                "recorded_at": row.recorded_at.isoformat(),
                "created": created,
            }

    @router.post("/v1/actions/{action_id}/outcome")
    async def outcome(action_id: str, request: Request) -> Response:
        header = request.headers.get("authorization")
        try:
            key = None
            if header is not None:
                scheme, _, value = header.partition(" ")
                if scheme.lower() != "bearer" or not value.strip():
                    raise AuthError("expected 'Authorization: Bearer <key>'")
                key = value.strip()
            tenant = await authenticate(key)
        except AuthError as exc:
            return _error(401, str(exc), "invalid_api_key")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(
                400, 'body must be JSON: {"outcome": "success" | "failure"}', "invalid_request"
            )
        if not isinstance(body, dict) or not isinstance(body.get("outcome"), str):
            return _error(400, 'body must be {"outcome": "success" | "failure"}', "invalid_request")
        detail = body.get("detail")
        try:
            data = await asyncio.to_thread(
                record,
                tenant.id,
                action_id,
                body["outcome"],
                detail if isinstance(detail, str) else None,
            )
        except ActionConflict as exc:
            return _error(409, str(exc), "outcome_conflict")
        except ValidationError as exc:
            return _error(400, str(exc), "invalid_request")
        return Response(orjson.dumps(data), media_type="application/json")

    return router
