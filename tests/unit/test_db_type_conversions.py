"""Money and UTCDateTime conversions, checked against each dialect without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from llmops.db.types import Money, UTCDateTime

DIALECTS = [
    pytest.param(sqlite.dialect(), id="sqlite"),
    pytest.param(postgresql.dialect(), id="pg"),
]


def test_money_is_text_on_sqlite_and_numeric_on_postgres() -> None:
    assert Money().compile(dialect=sqlite.dialect()) == "VARCHAR(40)"
    assert Money().compile(dialect=postgresql.dialect()) == "NUMERIC(28, 12)"


def test_money_binds_a_fixed_scale_string_on_sqlite() -> None:
    # Fixed scale keeps equal amounts equal as text (unique keys, equality filters).
    bound = Money().process_bind_param(Decimal("1.5"), sqlite.dialect())
    assert bound == "1.500000000000"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_money_rounds_to_twelve_places(dialect: Dialect) -> None:
    money = Money()
    bound = money.process_bind_param(Decimal("0.0000000000015"), dialect)
    assert money.process_result_value(bound, dialect) == Decimal("0.000000000002")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("bad", [0.5, float("nan")])
def test_money_refuses_floats(dialect: Dialect, bad: float) -> None:
    with pytest.raises(TypeError, match="never float"):
        Money().process_bind_param(bad, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("bad", ["NaN", Decimal("-Infinity")])
def test_money_refuses_non_finite_amounts(dialect: Dialect, bad: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        Money().process_bind_param(bad, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_datetime_refuses_naive_values(dialect: Dialect) -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), dialect)


def test_datetime_binds_utc_wall_time_on_sqlite_and_aware_utc_on_postgres() -> None:
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert UTCDateTime().process_bind_param(moment, sqlite.dialect()) == datetime(2026, 1, 1, 10)
    on_pg = UTCDateTime().process_bind_param(moment, postgresql.dialect())
    assert on_pg == moment and on_pg.tzinfo is UTC
