"""Column types that keep money exact and time zone-aware on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Scale of every money column: 12 decimal places (a millionth of a micro-dollar).
MONEY_SCALE = 12
_QUANT = Decimal(1).scaleb(-MONEY_SCALE)


class Money(TypeDecorator[Decimal]):
    """Exact decimal money: NUMERIC(28, 12) on Postgres, text on SQLite (no float ever)."""

    impl = Numeric(28, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(28, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be Decimal, int or str, never float")
        amount = Decimal(value)
        if not amount.is_finite():
            # NUMERIC accepts 'NaN' on Postgres; a NaN balance would poison every sum.
            raise ValueError(f"money must be finite, got {value!r}")
        amount = amount.quantize(_QUANT)
        return str(amount) if dialect.name == "sqlite" else amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value)).quantize(_QUANT)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp; naive datetimes are refused on write."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use timezone-aware UTC")
        value = value.astimezone(UTC)
        # SQLite keeps no zone: store UTC wall time, re-attach UTC on read.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
