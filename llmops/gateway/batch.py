"""Processing a batch of requests through the gateway with bounded asyncio concurrency.

Each item is one user action (its ``item_id`` is the request's action id). Running a
chunk again skips the items that already have a successful request_log row, so retries
and re-runs never pay twice for the same answer.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, select
from sqlmodel import col

from llmops.db.models import RequestLog
from llmops.errors import GatewayError, PricingError, ValidationError, is_retryable
from llmops.gateway.core import ChatRequest, Gateway


class BatchItem(BaseModel):
    """One request of a batch: raw messages or a rendered prompt."""

    item_id: str = Field(min_length=1, max_length=100, description="Unique id: the action id.")
    tenant_id: str = Field(min_length=1)
    feature_id: str = Field(min_length=1)
    model_group: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None


class ItemOutcome(BaseModel):
    """What happened to one item (JSON-serializable, so Prefect can persist it)."""

    item_id: str
    status: str  # ok | failed
    request_id: str | None = None
    text: str | None = None
    cost_usd: Decimal = Decimal(0)
    error_class: str | None = None
    error: str | None = None
    retryable: bool = False
    reused: bool = False


def completed_items(engine: Engine, items: list[BatchItem]) -> dict[str, ItemOutcome]:
    """Items that already have a successful call in the request log for the same tenant.

    A reused outcome's text is the logged one: redacted, placeholders and all.
    """
    tenant_of = {item.item_id: item.tenant_id for item in items}
    if not tenant_of:
        return {}
    stmt = select(
        col(RequestLog.action_id),
        col(RequestLog.tenant_id),
        col(RequestLog.request_id),
        col(RequestLog.response_text),
        col(RequestLog.cost_usd),
    ).where(col(RequestLog.action_id).in_(list(tenant_of)), col(RequestLog.status) == "ok")
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {
        action: ItemOutcome(
            item_id=action, status="ok", request_id=rid, text=text, cost_usd=cost, reused=True
        )
        for action, tenant, rid, text, cost in rows
        if action is not None and tenant_of.get(action) == tenant
    }


async def _run_one(gateway: Gateway, item: BatchItem, sem: asyncio.Semaphore) -> ItemOutcome:
    req = ChatRequest(
        tenant_id=item.tenant_id,
        feature_id=item.feature_id,
        messages=item.messages,
        model_group=item.model_group,
        max_tokens=item.max_tokens,
        temperature=item.temperature,
        action_id=item.item_id,
        prompt_name=item.prompt_name,
        prompt_version=item.prompt_version,
    )
    async with sem:
        try:
            result = await gateway.chat(req)
        except (GatewayError, PricingError, ValidationError) as exc:
            if isinstance(exc, GatewayError):
                error_class = exc.error_class
            elif isinstance(exc, PricingError):
                error_class = "pricing"  # as on the request_log row
            else:
                error_class = "validation"
            return ItemOutcome(
                item_id=item.item_id,
                status="failed",
                error_class=error_class,
                error=str(exc)[:500],
                retryable=is_retryable(exc),
            )
    return ItemOutcome(
        item_id=item.item_id,
        status="ok",
        request_id=result.request_id,
        text=result.text,
        cost_usd=result.cost_usd,
    )


async def run_items(
    gateway: Gateway, items: list[BatchItem], concurrency: int
) -> list[ItemOutcome]:
    """Run ``items`` (skipping already-completed ones), at most ``concurrency`` at a time."""
    ids = [item.item_id for item in items]
    if len(set(ids)) != len(ids):
        raise ValidationError("item_id values must be unique within a batch")
    done = await asyncio.to_thread(completed_items, gateway.log.engine, items)
    sem = asyncio.Semaphore(max(1, concurrency))
    todo = [item for item in items if item.item_id not in done]
    fresh = await asyncio.gather(*(_run_one(gateway, item, sem) for item in todo))
    by_id = {**done, **{o.item_id: o for o in fresh}}
    return [by_id[item_id] for item_id in ids]
