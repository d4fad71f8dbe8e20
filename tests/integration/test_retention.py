"""Retention: text older than each tenant's period goes; rows, tokens and cost stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from llmops.db.models import RequestLog
from llmops.errors import ConfigError
from llmops.ids import new_id
from llmops.retention import RetentionPolicy, load_retention, purge_text
from llmops.warehouse.load import load_request_log

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _row(tenant: str, age_days: float, tag: str) -> RequestLog:
    at = NOW - timedelta(days=age_days)
    return RequestLog(
        request_id=new_id("req"),
        started_at=at,
        ended_at=at,
        logged_at=at,
        tenant_id=tenant,
        feature_id="chat",
        model_group="chat-small",
        status="ok",
        input_tokens=10,
        output_tokens=5,
        cost_usd=Decimal("0.000123"),
        request_text=f"prompt {tag}",
        response_text=f"answer {tag}",
    )


def test_purge_follows_each_tenants_period(db_engine: Engine, tmp_path: Path) -> None:
    with Session(db_engine) as session:
        for row in [
            _row("acme", 40, "acme-old"),
            _row("acme", 10, "acme-recent"),
            _row("strict", 10, "strict-10d"),
            _row("strict", 3, "strict-3d"),
            _row("forever", 400, "forever-old"),
        ]:
            session.add(row)
        session.commit()
    warehouse = tmp_path / "wh.duckdb"
    load_request_log(db_engine, warehouse, settle=timedelta(0))

    policy = RetentionPolicy(default_days=30, tenants={"strict": 7, "forever": None})
    report = purge_text(db_engine, policy, warehouse=warehouse, now=NOW)
    assert report.ops_rows == {"strict": 1, "default": 1}
    assert report.warehouse_rows == 2

    with Session(db_engine) as session:
        rows = {r.request_text or r.request_id: r for r in session.exec(select(RequestLog))}
    kept = sorted(k for k in rows if k.startswith("prompt "))
    assert kept == ["prompt acme-recent", "prompt forever-old", "prompt strict-3d"]
    purged = [r for r in rows.values() if r.request_text is None]
    assert len(purged) == 2
    assert all(r.response_text is None and r.cost_usd == Decimal("0.000123") for r in purged)
    assert all(r.input_tokens == 10 for r in purged)

    con = duckdb.connect(str(warehouse))
    texts = con.execute(
        "SELECT request_text FROM request_log WHERE request_text IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert [t for (t,) in texts] == kept
    assert con.execute("SELECT count(*) FROM request_log").fetchone() == (5,)
    con.close()

    again = purge_text(db_engine, policy, warehouse=warehouse, now=NOW)
    assert again.total == 0 and again.warehouse_rows == 0


def test_policy_file_is_validated(tmp_path: Path) -> None:
    assert load_retention(tmp_path / "absent.yaml").days_for("anyone") == 30
    bad = tmp_path / "retention.yaml"
    bad.write_text("default_days: -3\n")
    with pytest.raises(ConfigError, match="default_days"):
        load_retention(bad)
    shipped = load_retention(Path("config/retention.yaml"))
    assert shipped.default_days == 30
