"""Spend caps on a real ops DB (SQLite and Postgres): reserve, settle, release, expire."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from llmops.db.engine import session_scope
from llmops.db.models import BudgetReservation
from llmops.errors import BudgetExceeded
from llmops.gateway.budget import EPOCH, BudgetManager, CapStatus

D = Decimal


class Clock:
    """A settable clock for the manager (aware UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 31, 23, 58, tzinfo=UTC))


@pytest.fixture
def budget(db_engine: Engine, clock: Clock) -> BudgetManager:
    return BudgetManager(db_engine, clock=clock)


def status(budget: BudgetManager, scope: str, period: str = "day") -> CapStatus:
    caps = {(cap.scope_key, cap.period): cap for cap in budget.list_caps()}
    return caps[(scope, period)]


def ledger(engine: Engine) -> dict[tuple[str, str, datetime], tuple[Decimal, Decimal]]:
    """(scope, period, window) -> (spent, reserved) for every ledger row."""
    with session_scope(engine) as session:
        rows = session.exec(
            text(  # type: ignore[call-overload]
                "SELECT c.scope_key, c.period, l.window_start, l.spent_usd, l.reserved_usd "
                "FROM budget_ledger l JOIN spend_caps c ON c.id = l.cap_id"
            )
        ).all()
    # Raw SQL skips the Money/UTCDateTime types: normalise what each backend returns.
    out = {}
    for scope, period, start, spent, reserved in rows:
        moment = datetime.fromisoformat(str(start)) if not isinstance(start, datetime) else start
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        out[(scope, period, moment)] = (D(str(spent)).normalize(), D(str(reserved)).normalize())
    return out


def reservation_status(engine: Engine, reservation_id: str) -> str:
    with session_scope(engine) as session:
        row = session.get(BudgetReservation, reservation_id)
        assert row is not None
        return row.status


def reserve(budget: BudgetManager, amount: str, tenant: str = "acme", feature: str = "chat") -> Any:
    return budget.reserve(
        request_id=f"req_{amount}", tenant_id=tenant, feature_id=feature, amount_usd=D(amount)
    )


# -- hard caps ----------------------------------------------------------------------------


def test_hard_cap_admits_up_to_the_limit_and_rejects_the_first_fraction_over(
    budget: BudgetManager,
) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("1.00"), period="day")
    first = reserve(budget, "0.40")
    reserve(budget, "0.60")  # exactly the limit: allowed
    with pytest.raises(BudgetExceeded) as refused:
        reserve(budget, "0.000000000001")
    message = str(refused.value)
    assert "tenant:acme" in message and "(day)" in message
    assert "limit $1.00" in message and "remaining $0.00" in message
    assert status(budget, "tenant:acme").reserved_usd == D("1.00")

    budget.release(first)
    with pytest.raises(BudgetExceeded, match=r"remaining \$0\.40"):
        reserve(budget, "0.400000000001")
    reserve(budget, "0.40")
    assert status(budget, "tenant:acme").reserved_usd == D("1.00")


def test_all_applicable_caps_are_reserved_or_none(db_engine: Engine, budget: BudgetManager) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(10), period="day")
    budget.set_cap(tenant_id="acme", feature_id="chat", limit_usd=D(1), period="month")
    budget.set_cap(tenant_id=None, feature_id="chat", limit_usd=D(5), period="total", mode="soft")
    held = reserve(budget, "0.80")
    assert len(held.cap_ids) == 3

    with pytest.raises(BudgetExceeded, match="tenant:acme/feature:chat"):
        reserve(budget, "0.30")
    # The refusal by one cap left the other two untouched.
    assert status(budget, "tenant:acme").reserved_usd == D("0.80")
    assert status(budget, "feature:chat", "total").reserved_usd == D("0.80")
    assert status(budget, "tenant:acme/feature:chat", "month").reserved_usd == D("0.80")

    # Other scopes only see the caps that apply to them.
    assert len(reserve(budget, "0.30", feature="search").cap_ids) == 1
    assert len(reserve(budget, "0.30", tenant="globex").cap_ids) == 1
    assert status(budget, "tenant:acme").reserved_usd == D("1.10")
    assert status(budget, "feature:chat", "total").reserved_usd == D("1.10")
    assert status(budget, "tenant:acme/feature:chat", "month").reserved_usd == D("0.80")
    assert len(ledger(db_engine)) == 3


def test_settle_records_the_actual_cost_below_or_above_the_hold(budget: BudgetManager) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("1.00"), period="day")
    assert budget.settle(reserve(budget, "0.50"), D("0.20")) == ()
    budget.settle(reserve(budget, "0.30"), D("0.45"))  # dearer than the worst case
    cap = status(budget, "tenant:acme")
    assert (cap.spent_usd, cap.reserved_usd, cap.remaining_usd) == (D("0.65"), 0, D("0.35"))
    with pytest.raises(BudgetExceeded):
        reserve(budget, "0.36")

    # Money that was spent is recorded even past a hard limit; then nothing more fits.
    alerts = budget.settle(reserve(budget, "0.35"), D("0.50"))
    assert [a.threshold_pct for a in alerts] == [80, 100]
    cap = status(budget, "tenant:acme")
    assert (cap.spent_usd, cap.remaining_usd, cap.used_pct) == (D("1.15"), 0, D("115.00"))
    with pytest.raises(BudgetExceeded):
        reserve(budget, "0.01")


def test_settle_and_release_are_idempotent(db_engine: Engine, budget: BudgetManager) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("1.00"), period="day")
    first = reserve(budget, "0.50")
    budget.settle(first, D("0.40"))
    assert budget.settle(first, D("0.40")) == ()
    assert budget.settle(first.id, D("0.90")) == ()  # by id too, whatever the amount
    budget.release(first)  # already settled: nothing to give back
    cap = status(budget, "tenant:acme")
    assert (cap.spent_usd, cap.reserved_usd) == (D("0.40"), 0)
    assert reservation_status(db_engine, first.id) == "settled"

    second = reserve(budget, "0.30")
    budget.release(second)
    budget.release(second.id)
    assert budget.settle(second, D("0.30")) == ()  # a released call spent nothing
    cap = status(budget, "tenant:acme")
    assert (cap.spent_usd, cap.reserved_usd) == (D("0.40"), 0)
    assert reservation_status(db_engine, second.id) == "released"

    budget.release("bres_no_such_reservation")
    assert budget.settle("bres_no_such_reservation", D(1)) == ()


# -- soft caps and alerts -----------------------------------------------------------------


def test_soft_cap_never_rejects_and_alerts_at_80_and_100_once_each(
    clock: Clock, budget: BudgetManager
) -> None:
    cap = budget.set_cap(
        tenant_id=None, feature_id="chat", limit_usd=D("1.00"), period="month", mode="soft"
    )
    held = reserve(budget, "0.90")
    assert held.alerts == ()  # alerts count settled spend, not worst-case holds
    assert budget.settle(held, D("0.50")) == ()
    (alert,) = budget.settle(reserve(budget, "0.50"), D("0.30"))
    assert alert.threshold_pct == 80
    assert (alert.cap_id, alert.scope_key, alert.period, alert.mode) == (
        cap.id,
        "feature:chat",
        "month",
        "soft",
    )
    assert alert.window_start == datetime(2026, 3, 1, tzinfo=UTC)
    assert (alert.spent_usd, alert.limit_usd) == (D("0.80"), D("1.00"))
    assert budget.settle(reserve(budget, "0.10"), D("0.10")) == ()

    over = reserve(budget, "5.00")  # a soft cap lets it through
    (alert,) = budget.settle(over, D("0.60"))
    assert (alert.threshold_pct, alert.spent_usd) == (100, D("1.50"))
    assert budget.settle(reserve(budget, "0.10"), D("0.10")) == ()

    clock.advance(days=1)  # April: a new window, armed again
    assert budget.settle(reserve(budget, "0.10"), D("0.10")) == ()
    (alert,) = budget.settle(reserve(budget, "0.70"), D("0.70"))
    assert (alert.threshold_pct, alert.window_start) == (80, datetime(2026, 4, 1, tzinfo=UTC))


def test_raising_a_limit_rearms_the_alerts_the_spend_no_longer_reaches(
    budget: BudgetManager,
) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(1), period="day", mode="soft")
    assert [a.threshold_pct for a in budget.settle(reserve(budget, "2"), D("1.2"))] == [80, 100]
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(2), period="day", mode="soft")
    assert budget.settle(reserve(budget, "0.3"), D("0.3")) == ()  # 75%: 80 is armed again
    assert [a.threshold_pct for a in budget.settle(reserve(budget, "1"), D("0.1"))] == [80]


# -- expiry -------------------------------------------------------------------------------


def test_expire_stale_releases_holds_left_by_a_crashed_process(
    db_engine: Engine, clock: Clock, budget: BudgetManager
) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("1.00"), period="total")
    crashed = reserve(budget, "0.60")
    clock.advance(minutes=10)
    assert budget.expire_stale() == 0
    clock.advance(minutes=6)
    live = reserve(budget, "0.30")
    assert budget.expire_stale() == 1
    assert budget.expire_stale() == 0
    assert status(budget, "tenant:acme", "total").reserved_usd == D("0.30")
    assert reservation_status(db_engine, crashed.id) == "expired"

    # The call did finish after all: its money was spent, and is recorded once.
    budget.settle(crashed, D("0.55"))
    budget.settle(live, D("0.25"))
    cap = status(budget, "tenant:acme", "total")
    assert (cap.spent_usd, cap.reserved_usd) == (D("0.80"), 0)
    assert reservation_status(db_engine, crashed.id) == "settled"
    budget.release(crashed)
    assert status(budget, "tenant:acme", "total").reserved_usd == 0


def test_a_full_cap_sweeps_expired_holds_before_refusing(
    clock: Clock, budget: BudgetManager
) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("1.00"), period="total")
    reserve(budget, "0.90")
    with pytest.raises(BudgetExceeded):
        reserve(budget, "0.50")
    clock.advance(minutes=16)
    reserve(budget, "0.50")  # no expire_stale() call: the refusal path swept the old hold
    assert status(budget, "tenant:acme", "total").reserved_usd == D("0.50")


# -- windows ------------------------------------------------------------------------------


def test_windows_roll_over_at_utc_midnight_and_month_start(
    db_engine: Engine, clock: Clock, budget: BudgetManager
) -> None:
    for period, limit in (("day", "1.00"), ("month", "1.50"), ("total", "1.85")):
        budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(limit), period=period)  # type: ignore[arg-type]
    march = reserve(budget, "0.90")  # 2026-03-31 23:58 UTC
    with pytest.raises(BudgetExceeded, match=r"\(day\)"):
        reserve(budget, "0.20")
    clock.advance(minutes=3)  # 2026-04-01 00:01 UTC: new day and month, same total
    april = reserve(budget, "0.90")
    with pytest.raises(BudgetExceeded, match=r"\(total\)"):
        reserve(budget, "0.06")  # fits the new day (0.10 left) but not the total (0.05)

    # Settled in April, the March hold settles against the March windows.
    budget.settle(march, D("0.70"))
    rows = ledger(db_engine)
    mar_1, mar_31, apr_1 = (datetime(2026, m, d, tzinfo=UTC) for m, d in ((3, 1), (3, 31), (4, 1)))
    assert rows[("tenant:acme", "day", mar_31)] == (D("0.7"), 0)
    assert rows[("tenant:acme", "month", mar_1)] == (D("0.7"), 0)
    assert rows[("tenant:acme", "day", apr_1)] == (0, D("0.9"))
    assert rows[("tenant:acme", "month", apr_1)] == (0, D("0.9"))
    assert rows[("tenant:acme", "total", EPOCH)] == (D("0.7"), D("0.9"))

    now = {cap.period: cap for cap in budget.list_caps()}
    assert now["day"].window_start == apr_1 and now["month"].window_start == apr_1
    assert now["total"].window_start == EPOCH
    assert (now["day"].spent_usd, now["day"].reserved_usd) == (0, D("0.90"))
    assert (now["total"].spent_usd, now["total"].reserved_usd) == (D("0.70"), D("0.90"))
    budget.settle(april, D("0.10"))
    assert status(budget, "tenant:acme", "month").spent_usd == D("0.10")


# -- caps ---------------------------------------------------------------------------------


def test_set_cap_upserts_on_scope_and_period(budget: BudgetManager) -> None:
    first = budget.set_cap(tenant_id="acme", feature_id="chat", limit_usd=D(1), period="day")
    again = budget.set_cap(
        tenant_id="acme", feature_id="chat", limit_usd=D("2.5"), period="day", mode="soft"
    )
    monthly = budget.set_cap(tenant_id="acme", feature_id="chat", limit_usd=D(9), period="month")
    assert first.id == again.id != monthly.id
    assert (again.scope_key, again.limit_usd, again.mode) == (
        "tenant:acme/feature:chat",
        2.5,
        "soft",
    )
    assert [(c.period, c.limit_usd, c.mode) for c in budget.list_caps()] == [
        ("day", D("2.5"), "soft"),
        ("month", D(9), "hard"),
    ]


def test_a_new_limit_applies_at_once_in_every_process(db_engine: Engine, clock: Clock) -> None:
    worker = BudgetManager(db_engine, clock=clock, cap_cache_ttl=3600)
    admin = BudgetManager(db_engine, clock=clock)
    admin.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(10), period="day")
    reserve(worker, "1")  # caches the cap list
    admin.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("1.5"), period="day")
    with pytest.raises(BudgetExceeded):  # limits are read in the reserving transaction
        reserve(worker, "1")


def test_a_new_cap_reaches_other_managers_when_their_cache_expires(
    db_engine: Engine, clock: Clock
) -> None:
    cached = BudgetManager(db_engine, clock=clock, cap_cache_ttl=3600)
    uncached = BudgetManager(db_engine, clock=clock, cap_cache_ttl=0)
    assert reserve(cached, "5").cap_ids == ()
    BudgetManager(db_engine, clock=clock).set_cap(
        tenant_id="acme", feature_id=None, limit_usd=D(1), period="day"
    )
    assert reserve(cached, "5").cap_ids == ()  # within its cache TTL: documented staleness
    with pytest.raises(BudgetExceeded):
        reserve(uncached, "5")
    cached.invalidate_caps()
    with pytest.raises(BudgetExceeded):
        reserve(cached, "5")


def test_delete_cap_removes_it_and_open_holds_lapse(budget: BudgetManager) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(1), period="day")
    held = reserve(budget, "0.5")
    assert budget.delete_cap(tenant_id="acme", period="day") is True
    assert budget.delete_cap(tenant_id="acme", period="day") is False
    assert budget.settle(held, D("0.5")) == ()
    assert budget.list_caps() == []
    assert reserve(budget, "50").cap_ids == ()


@pytest.fixture
def statements(db_engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(db_engine, "before_cursor_execute", record)
    yield seen
    event.remove(db_engine, "before_cursor_execute", record)


def test_a_request_without_caps_costs_no_query(
    db_engine: Engine, budget: BudgetManager, statements: list[str]
) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D(1), period="day")
    reserve(budget, "0.01", tenant="globex")  # loads the cap list
    statements.clear()
    for _ in range(50):
        free = reserve(budget, "5", tenant="globex")
        assert free.cap_ids == () and free.amount_usd == 5
        assert budget.settle(free, D(4)) == ()
        budget.release(free)
    assert statements == []
    with session_scope(db_engine) as session:
        assert session.exec(select(BudgetReservation)).all() == []  # type: ignore[call-overload]


# -- money --------------------------------------------------------------------------------


def test_money_stays_exact_over_many_tiny_amounts(budget: BudgetManager) -> None:
    budget.set_cap(tenant_id="acme", feature_id=None, limit_usd=D("0.3"), period="total")
    reserve(budget, "0.1")
    reserve(budget, "0.2")  # 0.1 + 0.2 is 0.3 exactly, not 0.30000000000000004
    with pytest.raises(BudgetExceeded):
        reserve(budget, "0.000000000001")

    budget.set_cap(tenant_id="tiny", feature_id=None, limit_usd=D("0.15"), period="total")
    holds = [reserve(budget, "0.001", tenant="tiny") for _ in range(150)]
    with pytest.raises(BudgetExceeded):  # 150 x 0.001 is the limit to the last digit
        reserve(budget, "0.000000000001", tenant="tiny")
    for held in holds:
        budget.settle(held, D("0.000333333333"))  # 12 places, the ledger scale
    cap = status(budget, "tenant:tiny", "total")
    assert cap.spent_usd == D("0.04999999995")  # 150 x 0.000333333333, to the digit
    assert cap.reserved_usd == 0
