"""config/billing.yaml: meters, plans, tenants; partial problems reported, not fatal."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from llmops.billing.sync import event_identifier
from llmops.errors import ConfigError
from llmops.metering.plans import load_billing_config, micro_usd

REPO = Path(__file__).resolve().parents[2]
METERS = {
    "tok": {"event_name": "tok", "display_name": "Tokens", "measure": "input_tokens"},
    "cost": {"event_name": "cost", "display_name": "Cost", "measure": "provider_cost"},
}


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "billing.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_billing_file_loads_without_problems() -> None:
    config = load_billing_config(REPO / "config" / "billing.yaml")
    assert config.problems == []
    assert set(config.plans) == {"tokens", "outcomes", "cost_plus"}
    assert config.tenant("someone-new") is not None  # default_plan


def test_a_plan_naming_an_unknown_meter_is_reported_and_the_rest_is_billed(
    tmp_path: Path,
) -> None:
    data = {
        "meters": METERS,
        "plans": {
            "p": {"meters": {"tok": {"unit_price_usd": "0.1"}, "ghost": {"unit_price_usd": "1"}}},
            "q": {"meters": {"cost": {"unit_price_usd": "1"}}},
        },
        "tenants": {"acme": {"plan": "p"}, "initech": {"plan": "nope"}},
    }
    config = load_billing_config(_write(tmp_path, data))
    assert set(config.plans["p"].meters) == {"tok"}
    assert config.plans["q"].meters == {}
    assert any("plans.p.meters.ghost: unknown meter 'ghost'" in p for p in config.problems)
    assert any(
        "plans.q.meters.cost: a provider_cost meter takes `markup`" in p for p in config.problems
    )
    assert any("tenants.initech.plan: unknown plan 'nope'" in p for p in config.problems)
    assert config.tenant("initech") is None
    who = config.tenant("acme", db_customer="cus_1")
    assert who is not None and who.stripe_customer_id == "cus_1" and who.plan == "p"


def test_structural_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = {"meters": {"tok": {**METERS["tok"], "measure": "vibes"}}, "plans": {"p": {"meters": {}}}}
    with pytest.raises(ConfigError, match=r"meters\.tok\.measure"):
        load_billing_config(_write(tmp_path, bad))
    dup = {"meters": {"a": METERS["tok"], "b": METERS["tok"]}, "plans": {"p": {"meters": {}}}}
    with pytest.raises(ConfigError, match="share event_name 'tok'"):
        load_billing_config(_write(tmp_path, dup))


def test_prices_and_micro_dollars_are_exact() -> None:
    assert micro_usd(Decimal("0.0000125")) == 13  # half-up
    assert micro_usd(Decimal("0.0000124999")) == 12
    assert micro_usd(Decimal("1.5") * Decimal("1.3")) == 1_950_000


def test_identifiers_are_deterministic_and_fit_stripes_limit() -> None:
    hour = datetime(2026, 11, 28, 7, tzinfo=UTC)
    assert event_identifier("acme", "tok", hour, 0) == "llmops-acme-tok-2026112807-0"
    assert event_identifier("acme", "tok", hour, 0) == event_identifier("acme", "tok", hour, 0)
    long = event_identifier("t" * 64, "m" * 100, hour, 12)
    assert len(long) <= 100 and long.endswith("-12")
    assert long == event_identifier("t" * 64, "m" * 100, hour, 12)
    assert long != event_identifier("t" * 64, "m" * 99, hour, 12)
