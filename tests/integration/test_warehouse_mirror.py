"""Small ops-DB tables mirrored into DuckDB whole, with exact money and UTC times."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
from sqlalchemy import Engine

from llmops.alerts import raise_alert
from llmops.gateway.budget import BudgetManager
from llmops.warehouse.mirror import mirror_tables


def test_caps_and_alerts_are_mirrored_and_replaced(db_engine: Engine, tmp_path: Path) -> None:
    budgets = BudgetManager(db_engine)
    budgets.set_cap(
        tenant_id="acme", feature_id=None, limit_usd=Decimal("12.345678901234"), period="month"
    )
    raise_alert(db_engine, "stripe_drift", "cus_1", "drift", details={"units": 3})
    warehouse = tmp_path / "wh.duckdb"

    copied = mirror_tables(db_engine, warehouse)
    assert copied["spend_caps"] == 1 and copied["alerts"] == 1
    con = duckdb.connect(str(warehouse))
    limit, scope = con.execute("SELECT limit_usd, scope_key FROM spend_caps").fetchone()  # type: ignore[misc]
    assert limit == Decimal("12.345678901234") and scope == "tenant:acme"
    details, seen = con.execute("SELECT details, first_seen_at FROM alerts").fetchone()  # type: ignore[misc]
    assert details == '{"units": 3}' and seen.tzinfo is not None
    con.close()

    budgets.set_cap(tenant_id="beta", feature_id=None, limit_usd=Decimal("1"), period="day")
    assert mirror_tables(db_engine, warehouse)["spend_caps"] == 2
    con = duckdb.connect(str(warehouse))
    assert con.execute("SELECT count(*) FROM spend_caps").fetchone() == (2,)
    con.close()
