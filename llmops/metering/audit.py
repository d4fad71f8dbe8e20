"""The gate's frames for rollups already stored in the ops DB (run before a Stripe sync):
rollups vs the raw request log per (tenant, hour), and meter usage vs the rollups."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from llmops.db.models import MeteringReject, MeterUsage, RequestLog, UsageRollup
from llmops.metering.plans import BillingConfig
from llmops.metering.quality import TOTAL_MEASURES, GateResult, run_gate
from llmops.metering.usage import expected_meter_usage, hour_of

__all__ = ["check_stored"]

_HOUR = timedelta(hours=1)


def _zero() -> dict[str, Any]:
    acc: dict[str, Any] = {m: 0 for m in TOTAL_MEASURES}
    acc["cost_usd"] = Decimal(0)
    return acc


def check_stored(session: Session, billing: BillingConfig, hours: list[datetime]) -> GateResult:
    """Run the gate on the stored hourly rollups and meter usage of ``hours``."""
    import pandas as pd

    if not hours:
        return GateResult(success=True)
    wanted = set(hours)
    lo, hi = min(hours), max(hours) + _HOUR
    rollups = [
        r
        for r in session.exec(
            select(UsageRollup).where(
                col(UsageRollup.granularity) == "hour",
                col(UsageRollup.window_start) >= lo,
                col(UsageRollup.window_start) < hi,
            )
        ).all()
        if r.window_start in wanted
    ]
    rejected = set(
        session.exec(
            select(MeteringReject.request_id).where(
                col(MeteringReject.started_at) >= lo, col(MeteringReject.started_at) < hi
            )
        ).all()
    )
    ours: dict[tuple[str, datetime], dict[str, Any]] = defaultdict(_zero)
    for r in rollups:
        acc = ours[(r.tenant_id, r.window_start)]
        for m in TOTAL_MEASURES:
            acc[m] += getattr(r, m)
    raw: dict[tuple[str, datetime], dict[str, Any]] = defaultdict(_zero)
    stmt = sa_select(
        col(RequestLog.request_id),
        col(RequestLog.tenant_id),
        col(RequestLog.started_at),
        col(RequestLog.input_tokens),
        col(RequestLog.output_tokens),
        col(RequestLog.cached_tokens),
        col(RequestLog.cost_usd),
    ).where(col(RequestLog.started_at) >= lo, col(RequestLog.started_at) < hi)
    for request_id, tenant, started, inp, out, cached, cost in session.execute(stmt).all():
        hour = hour_of(started)
        if hour not in wanted or request_id in rejected:
            continue
        acc = raw[(tenant, hour)]
        acc["calls"] += 1
        acc["input_tokens"] += inp
        acc["output_tokens"] += out
        acc["cached_tokens"] += cached
        acc["cost_usd"] += cost
    totals = []
    for key in sorted(set(ours) | set(raw)):
        row: dict[str, Any] = {"tenant_id": key[0], "window_start": key[1]}
        for m in TOTAL_MEASURES:
            row[f"{m}_diff"] = ours[key][m] - raw[key][m]
        totals.append(row)
    expected, _ = expected_meter_usage(session, billing, sorted(wanted))
    stored = {
        (u.tenant_id, u.meter, u.window_start): u.quantity
        for u in session.exec(
            select(MeterUsage).where(
                col(MeterUsage.window_start) >= lo, col(MeterUsage.window_start) < hi
            )
        ).all()
        if u.window_start in wanted
    }
    recomputed = {(e["tenant_id"], e["meter"], e["window_start"]): e["quantity"] for e in expected}
    usage = [
        {
            "tenant_id": k[0],
            "meter": k[1],
            "window_start": k[2],
            "quantity_diff": stored.get(k, 0) - recomputed.get(k, 0),
        }
        for k in sorted(set(stored) | set(recomputed))
    ]
    rollup_frame = pd.DataFrame([r.model_dump() for r in rollups])
    diff_columns = ["tenant_id", "window_start"] + [f"{m}_diff" for m in TOTAL_MEASURES]
    return run_gate(
        {
            "rollups": rollup_frame,
            "totals": pd.DataFrame(totals, columns=diff_columns),
            "meter_usage": pd.DataFrame(
                usage, columns=["tenant_id", "meter", "window_start", "quantity_diff"]
            ),
        }
    )
