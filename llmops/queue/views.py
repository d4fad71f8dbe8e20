"""The public view of a job: what the HTTP API, the CLI and callbacks show."""

from __future__ import annotations

from typing import Any

from llmops.db.models import Job

__all__ = ["job_view"]


def job_view(job: Job) -> dict[str, Any]:
    """What ``GET /v1/jobs/{id}`` and ``llmops jobs status`` show (JSON-ready)."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "object": "job",
        "tenant_id": job.tenant_id,
        "feature": job.feature_id,
        "status": job.status,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "result": job.result,
        "error": job.error,
        "cost_usd": str(job.cost_usd),
        "action_id": job.action_id or job.id,
        "idempotency_key": job.idempotency_key,
        "request_id": job.request_id,
        "model_group": (job.payload or {}).get("model_group"),
        "prompt": (job.payload or {}).get("prompt"),
        "not_before": iso(job.not_before),
        "callback": None
        if job.callback_url is None
        else {
            "url": job.callback_url,
            "status": job.callback_status,
            "attempts": job.callback_attempts,
            "http_status": job.callback_http_status,
            "error": job.callback_error,
            "delivered_at": iso(job.callback_delivered_at),
        },
        "history": job.history or [],
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at),
    }
