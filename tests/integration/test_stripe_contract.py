"""The Stripe stand-in and the llmops client against Stripe's published contract:
every request llmops sends and every answer the stand-in gives is validated against
``tests/data/stripe/billing-meters.openapi.json`` (OAS 3.0, API version 2024-04-10)."""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import stripe
from openapi_schema_validator import OAS30Validator

from llmops.stripe_sim import StripeSim, decode_form

#: Stripe's published contract, vendored from ``shared/stripe/`` (its README, copied
#: alongside, names the source commit), so the test runs wherever the repo is cloned.
SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "stripe" / "billing-meters.openapi.json"


@cache
def _raw_spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.fail(f"Stripe's contract is missing at {SPEC_PATH}")
    data: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return data


def _allow_null(node: Any) -> Any:
    """Stripe returns null where a schema is nullable through anyOf/$ref, which OAS 3.0
    validators refuse (they honour ``nullable`` only next to ``type``): make those accept
    null explicitly."""
    if isinstance(node, dict):
        out = {k: _allow_null(v) for k, v in node.items()}
        if out.get("nullable"):
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            if "type" not in out:
                out.pop("nullable")
                return {"anyOf": [out, {"enum": [None]}]}
        return out
    if isinstance(node, list):
        return [_allow_null(v) for v in node]
    return node


@cache
def _spec() -> dict[str, Any]:
    return _allow_null(copy.deepcopy(_raw_spec()))  # type: ignore[no-any-return]


def _validator(schema: dict[str, Any], spec: dict[str, Any] | None = None) -> OAS30Validator:
    # The spec's "#/components/..." references resolve against the root: carry them along.
    return OAS30Validator({**schema, "components": (spec or _spec())["components"]})


def _operation(method: str, path: str) -> dict[str, Any]:
    for template, ops in _spec()["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return ops[method.lower()]  # type: ignore[no-any-return]
    raise AssertionError(f"{method} {path} is not in Stripe's contract")


def _coerce(schema: dict[str, Any], value: Any) -> Any:
    """Form values are strings: turn those the schema types as integers into ints."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: _coerce(props.get(k, extra if isinstance(extra, dict) else {}), v)
            for k, v in value.items()
        }
    if schema.get("type") == "integer" and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def check_exchange(entry: dict[str, Any]) -> None:
    """Validate one journal entry (request form + response JSON) against the contract."""
    op = _operation(entry["method"], entry["path"])
    if entry["method"] == "POST":
        schema = op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        _validator(schema).validate(_coerce(schema, entry["form"]))
    else:
        for param in op.get("parameters", []):
            if param.get("required") and param["in"] == "query":
                assert param["name"] in entry["query"], f"missing {param['name']}"
    responses = op["responses"]
    answer = responses.get(str(entry["status"])) or responses["default"]
    schema = answer["content"]["application/json"]["schema"]
    _validator(schema).validate(entry["json"])


def test_the_null_patch_is_needed_and_only_widens_nullable_schemas() -> None:
    meter_schema = _raw_spec()["components"]["schemas"]["billing.meter"]
    assert "event_time_window" in meter_schema["properties"]
    meter = {
        "id": "mtr_1",
        "object": "billing.meter",
        "created": 1,
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": "sum"},
        "display_name": "x",
        "event_name": "x",
        "event_time_window": None,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": 1,
        "value_settings": {"event_payload_key": "value"},
    }
    ref = {"$ref": "#/components/schemas/billing.meter"}
    with pytest.raises(Exception, match="None is not"):
        _validator(ref, _raw_spec()).validate(meter)
    _validator(ref).validate(meter)
    with pytest.raises(Exception, match="is not"):
        _validator({"$ref": "#/components/schemas/billing.meter"}).validate(
            {**meter, "status": "paused"}
        )


def test_every_request_and_answer_of_setup_sync_and_reconcile_matches_the_contract(
    tmp_path: Path, sqlite_url: str
) -> None:
    from llmops.billing.client import RetryPolicy
    from llmops.billing.reconcile import run_reconcile
    from llmops.billing.setup import run_setup
    from llmops.billing.sync import run_sync
    from llmops.db.engine import make_engine
    from llmops.db.migrate import upgrade
    from llmops.ids import utcnow
    from llmops.metering.plans import load_billing_config
    from llmops.metering.rollup import run_rollup

    from .billing_helpers import add_tenants, log_rows, write_billing

    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    add_tenants(engine, "acme", "globex", "hooli")
    log_rows(engine, [{"started_at": hour, "tenant_id": t} for t in ("acme", "globex", "hooli")])
    billing = load_billing_config(write_billing(tmp_path))
    try:
        with StripeSim() as sim:
            client = stripe.StripeClient(
                "sk_test_contract", base_addresses={"api": sim.url}, max_network_retries=0
            )
            run_setup(engine, billing, client)
            from llmops.db.engine import session_scope
            from llmops.db.models import Tenant

            with session_scope(engine) as session:
                hooli = session.get(Tenant, "hooli")
                assert hooli is not None
                hooli.plan, hooli.stripe_customer_id = "tokens", "cus_unknown"
            run_rollup(engine, tmp_path / "wh.duckdb", billing, settle=timedelta(0))
            sim.fail_next(429, 2, "/v1/billing/meter_events")
            policy = RetryPolicy(base_delay_s=0.01, max_delay_s=0.02)
            report = run_sync(engine, billing, client, settle=timedelta(0), policy=policy)
            assert report.sent == 3 and len(report.rejected) == 2
            run_reconcile(engine, billing, client, start=now - timedelta(days=1), end=now)
            journal = sim.call(lambda s: list(s.journal))
    finally:
        engine.dispose()
    kinds = {
        (e["method"], re.sub(r"/(cus|mtr)_\w+", "/{id}", e["path"]), e["status"]) for e in journal
    }
    assert ("POST", "/v1/billing/meter_events", 200) in kinds
    assert ("POST", "/v1/billing/meter_events", 400) in kinds  # the unknown customer
    assert ("POST", "/v1/billing/meter_events", 429) in kinds
    assert ("GET", "/v1/billing/meters/{id}/event_summaries", 200) in kinds
    assert ("POST", "/v1/customers", 200) in kinds
    for entry in journal:
        check_exchange(entry)
        assert entry["headers"]["Authorization"] == "Bearer sk_test_contract"
        if entry["method"] == "POST":
            assert entry["headers"].get("Idempotency-Key")


def test_the_stand_in_enforces_the_documented_meter_event_rules() -> None:
    with StripeSim() as sim:
        client = stripe.StripeClient(
            "sk_test_x", base_addresses={"api": sim.url}, max_network_retries=0
        )
        client.v1.billing.meters.create(
            {"display_name": "T", "event_name": "tok", "default_aggregation": {"formula": "sum"}}
        )
        customer = client.v1.customers.create({"name": "A"})["id"]
        now = int(utcnow_ts())

        def send(**fields: Any) -> Any:
            params = {
                "event_name": "tok",
                "payload": {"stripe_customer_id": customer, "value": "3"},
                "timestamp": now,
            } | fields
            return client.v1.billing.meter_events.create(params)

        assert send(identifier="a")["identifier"] == "a"
        with pytest.raises(stripe.InvalidRequestError, match="already exists"):
            send(identifier="a")
        with pytest.raises(stripe.InvalidRequestError, match="35 calendar days"):
            send(identifier="old", timestamp=now - 36 * 86400)
        with pytest.raises(stripe.InvalidRequestError, match="35 calendar days"):
            send(identifier="future", timestamp=now + 600)
        with pytest.raises(stripe.InvalidRequestError, match="integer"):
            send(identifier="float", payload={"stripe_customer_id": customer, "value": "1.5"})
        with pytest.raises(stripe.InvalidRequestError, match="No active meter"):
            send(identifier="x", event_name="nope")
        # The same Idempotency-Key replays the first answer; other parameters are refused.
        first = client.v1.billing.meter_events.create(
            {
                "event_name": "tok",
                "payload": {"stripe_customer_id": customer, "value": "2"},
                "identifier": "k1",
            },
            {"idempotency_key": "key-1"},
        )
        replay = client.v1.billing.meter_events.create(
            {
                "event_name": "tok",
                "payload": {"stripe_customer_id": customer, "value": "2"},
                "identifier": "k1",
            },
            {"idempotency_key": "key-1"},
        )
        assert replay.to_dict() == first.to_dict()
        with pytest.raises(stripe.IdempotencyError):
            client.v1.billing.meter_events.create(
                {
                    "event_name": "tok",
                    "payload": {"stripe_customer_id": customer, "value": "9"},
                    "identifier": "k2",
                },
                {"idempotency_key": "key-1"},
            )
        assert sim.call(lambda s: s.total("tok", customer, 0, 2**40)) == 5
        for entry in sim.call(lambda s: list(s.journal)):
            check_exchange(entry)


def utcnow_ts() -> float:
    from llmops.ids import utcnow

    return utcnow().timestamp()


def test_decode_form_nests_bracket_keys() -> None:
    assert decode_form("a=1&payload%5Bvalue%5D=2&expand%5B0%5D=x&expand%5B1%5D=y") == {
        "a": "1",
        "payload": {"value": "2"},
        "expand": ["x", "y"],
    }
