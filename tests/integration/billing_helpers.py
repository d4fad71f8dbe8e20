"""Shared setup for the metering and billing tests: a billing file, request-log rows."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine
from sqlmodel import col, select

from llmops.db.engine import session_scope
from llmops.db.models import MeterUsage, RequestLog, StripeSyncLedger, Tenant

_seq = itertools.count()

BILLING = {
    "meters": {
        "input_tokens": {
            "event_name": "t_input_tokens",
            "display_name": "Input tokens",
            "measure": "input_tokens",
        },
        "output_tokens": {
            "event_name": "t_output_tokens",
            "display_name": "Output tokens",
            "measure": "output_tokens",
        },
        "actions": {
            "event_name": "t_actions",
            "display_name": "Successful actions",
            "measure": "successful_actions",
        },
        "cost": {
            "event_name": "t_cost_micros",
            "display_name": "Cost (micro-USD)",
            "measure": "provider_cost",
        },
    },
    "plans": {
        "tokens": {
            "meters": {
                "input_tokens": {"unit_price_usd": "0.000002"},
                "output_tokens": {"unit_price_usd": "0.000008"},
            }
        },
        "outcomes": {"meters": {"actions": {"unit_price_usd": "0.05"}, "cost": {"markup": "0.25"}}},
    },
    "tenants": {"acme": {"plan": "tokens"}, "globex": {"plan": "outcomes"}},
}


def write_billing(folder: Path, data: dict[str, Any] | None = None) -> Path:
    path = folder / "billing.yaml"
    path.write_text(yaml.safe_dump(data or BILLING))
    return path


def add_tenants(engine: Engine, *ids: str) -> None:
    with session_scope(engine) as session:
        for tenant_id in ids:
            session.add(Tenant(id=tenant_id, name=tenant_id.title()))


def log_rows(engine: Engine, rows: list[dict[str, Any]]) -> list[str]:
    """Insert request-log rows (defaults filled in); returns their request ids."""
    ids = []
    with session_scope(engine) as session:
        for spec in rows:
            started: datetime = spec["started_at"]
            request_id = f"req_{next(_seq):08d}_{started:%H%M%S}"
            ids.append(request_id)
            session.add(
                RequestLog(
                    request_id=request_id,
                    started_at=started,
                    ended_at=started + timedelta(milliseconds=spec.get("latency_ms", 100)),
                    logged_at=spec.get("logged_at", started),
                    tenant_id=spec.get("tenant_id", "acme"),
                    feature_id=spec.get("feature_id", "chat"),
                    action_id=spec.get("action_id"),
                    model_group="fast",
                    model=spec.get("model", "openai/gpt-4o-mini"),
                    status=spec.get("status", "ok"),
                    input_tokens=spec.get("input_tokens", 100),
                    output_tokens=spec.get("output_tokens", 20),
                    cost_usd=Decimal(spec.get("cost_usd", "0.000027")),
                    latency_ms=spec.get("latency_ms", 100),
                    cache_hit=spec.get("cache_hit", False),
                )
            )
    return ids


def usage_totals(engine: Engine) -> dict[tuple[str, str], int]:
    """Meter usage summed per (tenant, meter)."""
    out: dict[tuple[str, str], int] = {}
    with session_scope(engine) as session:
        for u in session.exec(select(MeterUsage)).all():
            out[(u.tenant_id, u.meter)] = out.get((u.tenant_id, u.meter), 0) + u.quantity
    return out


def ledger_rows(engine: Engine, status: str | None = None) -> list[StripeSyncLedger]:
    with session_scope(engine) as session:
        stmt = select(StripeSyncLedger).order_by(col(StripeSyncLedger.id))
        if status:
            stmt = stmt.where(col(StripeSyncLedger.status) == status)
        return list(session.exec(stmt).all())
