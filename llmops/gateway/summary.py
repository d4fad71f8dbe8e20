"""What the request log says about a set of actions: the truth behind a batch summary."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import col

from llmops.db.models import RequestLog

_CHUNK = 500


def batch_summary(engine: Engine, item_ids: list[str]) -> dict[str, Any]:
    """Items ok and failed, calls, retries, fallbacks and exact cost for these action ids."""
    ok_items: set[str] = set()
    calls = attempts = fallbacks = errors = 0
    cost = Decimal(0)
    with engine.connect() as conn:
        for start in range(0, len(item_ids), _CHUNK):
            part = item_ids[start : start + _CHUNK]
            stmt = select(
                col(RequestLog.action_id),
                col(RequestLog.status),
                col(RequestLog.attempts),
                col(RequestLog.fallbacks_used),
                col(RequestLog.cost_usd),
            ).where(col(RequestLog.action_id).in_(part))
            for action_id, status, n_attempts, n_fallbacks, row_cost in conn.execute(stmt):
                calls += 1
                attempts += n_attempts
                fallbacks += n_fallbacks
                cost += row_cost
                if status == "ok" and action_id is not None:
                    ok_items.add(action_id)
                else:
                    errors += 1
    return {
        "items": len(item_ids),
        "items_ok": len(ok_items),
        "items_failed": len(item_ids) - len(ok_items),
        "calls": calls,
        "failed_calls": errors,
        "attempts": attempts,
        "fallbacks": fallbacks,
        "cost_usd": str(cost),
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a markdown table (a Prefect artifact)."""
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in summary.items()]
    return "\n".join(lines)
