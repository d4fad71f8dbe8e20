"""Money stays exact and time stays aware UTC through a real round trip on each backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import StatementError
from sqlmodel import select

from llmops.db.engine import session_scope
from llmops.db.models import BudgetReservation, RequestLog

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _reservation(id: str, amount: object, **fields: object) -> BudgetReservation:
    return BudgetReservation(
        id=id, request_id=f"req_{id}", amount_usd=amount, expires_at=EXPIRES, **fields
    )


@pytest.mark.parametrize(
    "amount",
    [
        Decimal("0.000000123456"),
        Decimal("12345678.123456789012"),
        Decimal("9999999999999999.999999999999"),  # the largest NUMERIC(28, 12)
        Decimal("-0.000000000001"),
        Decimal("0"),
    ],
)
def test_money_round_trips_exactly(db_engine: Engine, amount: Decimal) -> None:
    with session_scope(db_engine) as session:
        session.add(_reservation("r1", amount))
    with session_scope(db_engine) as session:
        stored = session.exec(select(BudgetReservation.amount_usd)).one()
    assert isinstance(stored, Decimal)
    assert stored == amount
    assert stored.as_tuple().exponent == -12  # always at the column's scale


def test_money_accepts_int_and_str_and_keeps_none(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add(_reservation("r1", 3, settled_usd=None))
        session.add(_reservation("r2", "0.1", settled_usd="0.05"))
    with session_scope(db_engine) as session:
        rows = session.exec(
            select(BudgetReservation.amount_usd, BudgetReservation.settled_usd).order_by(
                BudgetReservation.id
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (Decimal(3), None),
        (Decimal("0.1"), Decimal("0.05")),
    ]


@pytest.mark.parametrize("bad", [0.1, Decimal("NaN"), Decimal("Infinity")])
def test_money_refuses_float_and_non_finite_values(db_engine: Engine, bad: object) -> None:
    with pytest.raises(StatementError) as caught, session_scope(db_engine) as session:
        session.add(_reservation("r1", bad))
    assert isinstance(caught.value.orig, TypeError | ValueError)
    with session_scope(db_engine) as session:
        assert session.exec(select(BudgetReservation)).all() == []


def test_a_sum_of_many_money_values_read_back_is_exact(db_engine: Engine) -> None:
    # 0.1 has no exact binary form: 3000 of them summed as floats drift off 300.
    amounts = [Decimal("0.1"), Decimal("0.000000000007"), Decimal("1234.56789")] * 1000
    with session_scope(db_engine) as session:
        session.add_all(
            RequestLog(
                request_id=f"req_{index}",
                tenant_id="t",
                feature_id="f",
                model_group="g",
                status="ok",
                cost_usd=amount,
            )
            for index, amount in enumerate(amounts)
        )
    with session_scope(db_engine) as session:
        stored = session.exec(select(RequestLog.cost_usd)).all()
    assert sum(stored, Decimal(0)) == Decimal("1234667.890000007")
    assert sum(float(amount) for amount in amounts) != 1234667.890000007


def test_timestamps_come_back_aware_utc_whatever_zone_went_in(db_engine: Engine) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    written = datetime(2026, 3, 1, 9, 15, 30, 123456, tzinfo=india)
    with session_scope(db_engine) as session:
        session.add(
            BudgetReservation(id="r1", request_id="req_1", expires_at=written, amount_usd=1)
        )
    with session_scope(db_engine) as session:
        if db_engine.dialect.name == "postgresql":
            # The session zone must not leak into what the engine hands back.
            session.connection().execute(text("SET TIME ZONE 'America/Los_Angeles'"))
        stored = session.exec(select(BudgetReservation.expires_at)).one()
    assert stored == written
    assert stored.tzinfo is UTC
    assert stored == datetime(2026, 3, 1, 3, 45, 30, 123456, tzinfo=UTC)


def test_timestamps_compare_correctly_in_sql(db_engine: Engine) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with session_scope(db_engine) as session:
        for hours in (1, 10, 100):
            session.add(_reservation(f"r{hours}", 1, created_at=start + timedelta(hours=hours)))
    cutoff = (start + timedelta(hours=5)).astimezone(timezone(timedelta(hours=-8)))
    with session_scope(db_engine) as session:
        later = session.exec(
            select(BudgetReservation.id)
            .where(BudgetReservation.created_at > cutoff)
            .order_by(BudgetReservation.created_at)
        ).all()
    assert later == ["r10", "r100"]


def test_naive_datetimes_are_refused(db_engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_scope(db_engine) as s:
        s.add(BudgetReservation(id="r1", request_id="req_1", expires_at=datetime(2030, 1, 1)))
