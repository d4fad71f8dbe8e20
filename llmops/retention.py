"""Retention: purge request and response text older than a number of days, per tenant.

``config/retention.yaml`` (``LLMOPS_RETENTION_CONFIG``) sets ``default_days`` and
per-tenant overrides; ``null`` keeps text forever. Only the text columns are cleared:
rows stay, so tokens, cost, latency, rollups and billing records are untouched. The same
purge is applied to the DuckDB warehouse's copy of the request log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, and_, or_, update
from sqlmodel import col

from llmops.configfile import load_yaml_model
from llmops.db.models import RequestLog
from llmops.ids import utcnow


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_days: int | None = Field(default=30, ge=0)
    tenants: dict[str, int | None] = Field(default_factory=dict)

    def days_for(self, tenant_id: str) -> int | None:
        return self.tenants.get(tenant_id, self.default_days)


def load_retention(path: Path) -> RetentionPolicy:
    """The policy in ``path``; the defaults (30 days for everyone) if there is no file."""
    if not path.exists():
        return RetentionPolicy()
    return load_yaml_model(path, RetentionPolicy)


@dataclass
class PurgeReport:
    ops_rows: dict[str, int] = field(default_factory=dict)  # scope -> rows whose text went
    warehouse_rows: int = 0

    @property
    def total(self) -> int:
        return sum(self.ops_rows.values())


def _scopes(policy: RetentionPolicy, now: datetime) -> list[tuple[str, list[str], datetime]]:
    """(label, tenant filter, cutoff): one per overridden tenant, then everyone else."""
    scopes = [
        (t, [t], now - timedelta(days=d))
        for t, d in sorted(policy.tenants.items())
        if d is not None
    ]
    if policy.default_days is not None:
        scopes.append(("default", [], now - timedelta(days=policy.default_days)))
    return scopes


def purge_text(
    engine: Engine,
    policy: RetentionPolicy,
    *,
    warehouse: Path | None = None,
    now: datetime | None = None,
) -> PurgeReport:
    """Clear request and response text older than each tenant's retention. Idempotent."""
    now = now or utcnow()
    report = PurgeReport()
    overridden = sorted(policy.tenants)
    with engine.begin() as conn:
        for label, tenants, cutoff in _scopes(policy, now):
            who = (
                col(RequestLog.tenant_id).in_(tenants)
                if tenants
                else col(RequestLog.tenant_id).not_in(overridden)
            )
            result = conn.execute(
                update(RequestLog)
                .where(
                    and_(
                        who,
                        col(RequestLog.started_at) < cutoff,
                        or_(
                            col(RequestLog.request_text).is_not(None),
                            col(RequestLog.response_text).is_not(None),
                        ),
                    )
                )
                .values(request_text=None, response_text=None)
            )
            report.ops_rows[label] = result.rowcount
    if warehouse is not None and warehouse.exists():
        report.warehouse_rows = _purge_warehouse(warehouse, policy, overridden, now)
    return report


def _purge_warehouse(
    path: Path, policy: RetentionPolicy, overridden: list[str], now: datetime
) -> int:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        if not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'request_log'"
        ).fetchone()[0]:  # type: ignore[index]
            return 0
        purged = 0
        for _label, tenants, cutoff in _scopes(policy, now):
            if tenants:
                who, args = "tenant_id = ?", [tenants[0]]
            elif overridden:
                who = f"tenant_id NOT IN ({', '.join('?' for _ in overridden)})"
                args = list(overridden)
            else:
                who, args = "TRUE", []
            row = con.execute(
                "UPDATE request_log SET request_text = NULL, response_text = NULL "
                f"WHERE {who} AND started_at < ? "
                "AND (request_text IS NOT NULL OR response_text IS NOT NULL)",
                [*args, cutoff],
            ).fetchone()
            purged += int(row[0]) if row else 0
        return purged
    finally:
        con.close()
