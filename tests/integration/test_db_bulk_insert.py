"""``bulk_insert`` (COPY on Postgres, executemany on SQLite) stores exactly what an ORM
insert stores: money to the last decimal place, time as aware UTC, on each backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import col, select

from llmops.db.engine import bulk_insert, session_scope
from llmops.db.models import UsageRollup

#: Every column but the id (bulk_insert applies no Python-side defaults).
COLUMNS = [c.name for c in UsageRollup.__table__.columns if c.name != "id"]
AMOUNTS = [
    Decimal("0E-12"),
    Decimal("0.000000000001"),
    Decimal("12345678.123456789012"),
    Decimal("9999999999999999.999999999999"),  # the largest NUMERIC(28, 12)
    Decimal("-0.5"),
    Decimal("7"),
]
INDIA = timezone(timedelta(hours=5, minutes=30))
START = datetime(2026, 3, 1, 9, 30, tzinfo=INDIA)


def _stored(engine: Engine, tenant: str) -> list[tuple[Any, ...]]:
    """(window_start, cost_usd) as the ORM reads them, and as the database holds them."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(UsageRollup)
            .where(col(UsageRollup.tenant_id) == tenant)
            .order_by(col(UsageRollup.feature_id))
        ).all()
        raw = session.connection().execute(
            text(
                "SELECT CAST(window_start AS TEXT), CAST(cost_usd AS TEXT) FROM usage_rollups "
                "WHERE tenant_id = :t ORDER BY feature_id"
            ),
            {"t": tenant},
        )
        return [(r.window_start, r.cost_usd, *stored) for r, stored in zip(rows, raw, strict=True)]


def _row(window: datetime, tenant: str, feature: str, cost: object) -> tuple[Any, ...]:
    values = {"granularity": "hour", "window_start": window, "tenant_id": tenant}
    values |= {"feature_id": feature, "model": "m", "prompt_name": "", "cost_usd": cost}
    values["updated_at"] = START
    return tuple(values.get(name, 0) for name in COLUMNS)


def test_bulk_insert_stores_what_an_orm_insert_stores(db_engine: Engine) -> None:
    windows = [START + timedelta(hours=i) for i in range(len(AMOUNTS))]
    with session_scope(db_engine) as session:
        for i, (window, amount) in enumerate(zip(windows, AMOUNTS, strict=True)):
            session.add(
                UsageRollup(
                    granularity="hour",
                    window_start=window,
                    tenant_id="orm",
                    feature_id=f"f{i}",
                    model="m",
                    cost_usd=amount,
                    updated_at=START,
                )
            )
    rows = [
        _row(window=window, tenant="bulk", feature=f"f{i}", cost=amount)
        for i, (window, amount) in enumerate(zip(windows, AMOUNTS, strict=True))
    ]
    with session_scope(db_engine) as session:
        assert bulk_insert(session.connection(), UsageRollup.__table__, COLUMNS, rows) == 6

    bulk, orm = _stored(db_engine, "bulk"), _stored(db_engine, "orm")
    assert bulk == orm
    assert [r[1] for r in bulk] == AMOUNTS
    assert all(r[1].as_tuple().exponent == -12 for r in bulk)
    assert [r[0] for r in bulk] == [w.astimezone(UTC) for w in windows]
    assert all(r[0].tzinfo is UTC for r in bulk)


def test_bulk_insert_rolls_back_with_its_transaction_and_refuses_float_money(
    db_engine: Engine,
) -> None:
    row = _row(window=START, tenant="t", feature="f", cost=Decimal("1.5"))
    with pytest.raises(RuntimeError), session_scope(db_engine) as session:
        bulk_insert(session.connection(), UsageRollup.__table__, COLUMNS, [row])
        raise RuntimeError("the rest of the transaction failed")
    # A float after an equal Decimal is still refused (equal values share one binding).
    floating = _row(window=START, tenant="t", feature="g", cost=1.5)
    with pytest.raises(TypeError, match="never float"), session_scope(db_engine) as session:
        bulk_insert(session.connection(), UsageRollup.__table__, COLUMNS, [row, floating])
    with session_scope(db_engine) as session:
        assert session.exec(select(UsageRollup)).all() == []
