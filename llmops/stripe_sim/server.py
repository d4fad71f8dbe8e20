"""A local stand-in for Stripe's Billing Meters API, written to Stripe's published contract
(``tests/data/stripe/billing-meters.openapi.json``, from ``shared/stripe/``; API version
2024-04-10).

Implements customers, billing meters, meter events (identifier deduplication over 24 h,
timestamp window of 35 days back and 5 minutes ahead, integer value validation), meter
event adjustments (cancel), event summaries (hourly grouping), the ``Idempotency-Key``
header (replays with ``Idempotent-Replayed: true``), Stripe's error body and injectable
429/500 faults. State is in memory. Test hooks live under ``/_sim/`` (stats, faults).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

__all__ = ["StripeSimState", "build_app", "decode_form"]

_PAST_S = 35 * 24 * 3600
_FUTURE_S = 5 * 60
_DEDUP_S = 24 * 3600
_STATE: web.AppKey[StripeSimState] = web.AppKey("stripe_sim_state")


def decode_form(body: str) -> dict[str, Any]:
    """Form fields with Stripe's bracket keys (``payload[value]``, ``expand[0]``) nested."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    decoded: dict[str, Any] = _lists(out)
    return decoded


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


class StripeError(Exception):
    """An error answered in Stripe's shape: ``{"error": {"type", "message", ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type_,
            code,
            param,
        )

    def body(self) -> dict[str, Any]:
        # Stripe leaves code and param out when they do not apply, rather than null.
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


@dataclass
class Fault:
    """Answer the next ``count`` matching requests with ``status`` (429 or 5xx)."""

    status: int
    count: int
    path_prefix: str = "/v1/"


@dataclass
class StripeSimState:
    """Everything the stand-in holds."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    identifiers: dict[str, float] = field(default_factory=dict)
    canceled: set[str] = field(default_factory=set)
    idempotency: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    fault_rate: dict[int, float] = field(default_factory=dict)
    latency_s: float = 0.0
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    answered: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    #: The last requests and answers (method, path, query, form body, status, JSON), for
    #: contract tests; bounded so a long benchmark does not grow it without limit.
    journal: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "answered": {str(k): v for k, v in self.answered.items()},
            "events": len(self.events),
            "events_active": sum(1 for e in self.events if e["identifier"] not in self.canceled),
            "customers": len(self.customers),
            "meters": len(self.meters),
        }

    def total(self, event_name: str, customer: str, start: int, end: int) -> int:
        """Sum of the live events of a meter and customer with start <= timestamp < end."""
        return sum(
            int(e["payload"]["value"])
            for e in self.events
            if e["event_name"] == event_name
            and e["customer"] == customer
            and start <= e["timestamp"] < end
            and e["identifier"] not in self.canceled
        )


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(exc: StripeError) -> web.Response:
    return _json(exc.body(), exc.status)


def _require(params: dict[str, Any], name: str) -> Any:
    if name not in params or params[name] in ("", None):
        raise StripeError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return params[name]


def _int(value: Any, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise StripeError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        ) from None


def _list(data: list[dict[str, Any]], url: str, query: Any) -> dict[str, Any]:
    limit = min(max(_int(query.get("limit", 10), "limit"), 1), 100)
    after = query.get("starting_after")
    if after:
        ids = [item["id"] for item in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit, "url": url}


class _Api:
    def __init__(self, state: StripeSimState) -> None:
        self.s = state

    # customers ---------------------------------------------------------------------------
    def create_customer(self, p: dict[str, Any]) -> dict[str, Any]:
        customer: dict[str, Any] = {
            "id": _new_id("cus"),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": int(time.time()),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": p.get("description"),
            "discount": None,
            "email": p.get("email"),
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": dict(p.get("metadata") or {}),
            "name": p.get("name"),
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.s.customers[customer["id"]] = customer
        return customer

    def customer(self, cid: str) -> dict[str, Any]:
        if cid not in self.s.customers:
            raise StripeError(
                404, f"No such customer: '{cid}'", code="resource_missing", param="id"
            )
        return self.s.customers[cid]

    # meters ------------------------------------------------------------------------------
    def create_meter(self, p: dict[str, Any]) -> dict[str, Any]:
        name = str(_require(p, "event_name"))
        display = str(_require(p, "display_name"))
        aggregation = _require(p, "default_aggregation")
        formula = aggregation.get("formula") if isinstance(aggregation, dict) else None
        if formula not in ("sum", "count"):
            raise StripeError(
                400,
                "Invalid default_aggregation[formula]: must be one of sum, count",
                param="default_aggregation[formula]",
            )
        if any(m["event_name"] == name and m["status"] == "active" for m in self.s.meters.values()):
            raise StripeError(
                400, f"An active meter with event_name `{name}` already exists.", param="event_name"
            )
        now = int(time.time())
        meter: dict[str, Any] = {
            "id": _new_id("mtr"),
            "object": "billing.meter",
            "created": now,
            "customer_mapping": {
                "event_payload_key": (p.get("customer_mapping") or {}).get(
                    "event_payload_key", "stripe_customer_id"
                ),
                "type": "by_id",
            },
            "default_aggregation": {"formula": formula},
            "display_name": display,
            "event_name": name,
            "event_time_window": p.get("event_time_window"),
            "livemode": False,
            "status": "active",
            "status_transitions": {"deactivated_at": None},
            "updated": now,
            "value_settings": {
                "event_payload_key": (p.get("value_settings") or {}).get(
                    "event_payload_key", "value"
                )
            },
        }
        self.s.meters[meter["id"]] = meter
        return meter

    def meter(self, mid: str) -> dict[str, Any]:
        if mid not in self.s.meters:
            raise StripeError(
                404, f"No such billing meter: '{mid}'", code="resource_missing", param="id"
            )
        return self.s.meters[mid]

    # meter events ------------------------------------------------------------------------
    def create_event(self, p: dict[str, Any]) -> dict[str, Any]:
        name = str(_require(p, "event_name"))
        payload = _require(p, "payload")
        if not isinstance(payload, dict):
            raise StripeError(400, "Invalid payload: must be a hash", param="payload")
        meter = next(
            (
                m
                for m in self.s.meters.values()
                if m["event_name"] == name and m["status"] == "active"
            ),
            None,
        )
        if meter is None:
            raise StripeError(
                400, f"No active meter found for event_name `{name}`.", param="event_name"
            )
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        customer = payload.get(customer_key)
        if not customer:
            raise StripeError(
                400,
                f"Missing required param: payload[{customer_key}].",
                code="parameter_missing",
                param=f"payload[{customer_key}]",
            )
        if customer not in self.s.customers:
            raise StripeError(
                400,
                f"No such customer: '{customer}'",
                code="resource_missing",
                param=f"payload[{customer_key}]",
            )
        raw_value = payload.get(value_key)
        if meter["default_aggregation"]["formula"] == "sum":
            if raw_value is None:
                raise StripeError(
                    400,
                    f"Missing required param: payload[{value_key}].",
                    code="parameter_missing",
                    param=f"payload[{value_key}]",
                )
            try:
                value = int(str(raw_value))
            except ValueError:
                raise StripeError(
                    400,
                    f"Invalid payload[{value_key}]: must be an integer",
                    code="parameter_invalid_integer",
                    param=f"payload[{value_key}]",
                ) from None
            if value < 0:
                raise StripeError(
                    400,
                    f"Invalid payload[{value_key}]: must be non-negative",
                    param=f"payload[{value_key}]",
                )
        now = int(time.time())
        timestamp = _int(p.get("timestamp", now), "timestamp")
        if timestamp < now - _PAST_S or timestamp > now + _FUTURE_S:
            raise StripeError(
                400,
                "Timestamp must be within the past 35 calendar days or up "
                "to 5 minutes in the future.",
                param="timestamp",
            )
        identifier = str(p.get("identifier") or _new_id("evt"))
        if len(identifier) > 100:
            raise StripeError(
                400, "Invalid identifier: must be at most 100 characters", param="identifier"
            )
        seen = self.s.identifiers.get(identifier)
        if seen is not None and seen > now - _DEDUP_S:
            raise StripeError(
                400,
                f"An event already exists with identifier {identifier}.",
                code="resource_already_exists",
                param="identifier",
            )
        event = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": name,
            "identifier": identifier,
            "livemode": False,
            "payload": {k: str(v) for k, v in payload.items()},
            "timestamp": timestamp,
        }
        self.s.identifiers[identifier] = now
        self.s.events.append({**event, "customer": customer})
        return event

    def adjust(self, p: dict[str, Any]) -> dict[str, Any]:
        name = str(_require(p, "event_name"))
        if p.get("type", "cancel") != "cancel":
            raise StripeError(400, "Invalid type: must be cancel", param="type")
        identifier = str((p.get("cancel") or {}).get("identifier") or "")
        if identifier not in self.s.identifiers:
            raise StripeError(
                400, f"No meter event with identifier {identifier}", param="cancel[identifier]"
            )
        self.s.canceled.add(identifier)
        return {
            "id": _new_id("mtrevtadj"),
            "object": "billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "event_name": name,
            "livemode": False,
            "status": "complete",
            "type": "cancel",
        }

    def summaries(self, mid: str, query: Any) -> list[dict[str, Any]]:
        meter = self.meter(mid)
        customer = str(_require(dict(query), "customer"))
        start = _int(_require(dict(query), "start_time"), "start_time")
        end = _int(_require(dict(query), "end_time"), "end_time")
        if end <= start:
            raise StripeError(400, "end_time must be after start_time", param="end_time")
        grouping = query.get("value_grouping_window")
        windows: list[tuple[int, int]]
        if grouping == "hour":
            if start % 3600 or end % 3600:
                raise StripeError(
                    400,
                    "start_time and end_time must be aligned to the hour "
                    "when value_grouping_window is hour",
                    param="start_time",
                )
            windows = [(t, t + 3600) for t in range(start, end, 3600)]
        elif grouping is None:
            windows = [(start, end)]
        else:
            raise StripeError(
                400, "Invalid value_grouping_window: must be hour", param="value_grouping_window"
            )
        out = []
        for lo, hi in windows:
            value = self.s.total(meter["event_name"], customer, lo, hi)
            if grouping == "hour" and value == 0:
                continue
            out.append(
                {
                    "id": "mtrusg_"
                    + hashlib.sha1(f"{mid}{customer}{lo}".encode()).hexdigest()[:24],
                    "object": "billing.meter_event_summary",
                    "aggregated_value": float(value),
                    "end_time": hi,
                    "livemode": False,
                    "meter": mid,
                    "start_time": lo,
                }
            )
        return out


def build_app(state: StripeSimState | None = None) -> web.Application:
    """The stand-in as an aiohttp application."""
    app = web.Application()
    app[_STATE] = state or StripeSimState()
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


def state_of(app: web.Application) -> StripeSimState:
    return app[_STATE]


async def _handle(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    path = request.path
    if path.startswith("/_sim/"):
        return await _admin(request, state)
    state.requests[f"{request.method} {_route_name(path)}"] += 1
    response = await _api(request, state)
    state.answered[response.status] += 1
    body = (await request.read()).decode() if request.method == "POST" else ""
    state.journal.append(
        {
            "method": request.method,
            "path": path,
            "query": dict(request.query),
            "form": decode_form(body),
            "headers": dict(request.headers),
            "status": response.status,
            "json": json.loads(bytes(response.body)) if response.body else None,  # type: ignore[arg-type]
        }
    )
    return response


def _route_name(path: str) -> str:
    parts = path.strip("/").split("/")
    return "/" + "/".join("{id}" if p.startswith(("cus_", "mtr_")) else p for p in parts)


async def _api(request: web.Request, state: StripeSimState) -> web.Response:
    import asyncio
    import random

    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer sk_") and not auth.startswith("Basic "):
        return _error(StripeError(401, "Invalid API Key provided.", type_="invalid_request_error"))
    for fault in state.faults:
        if fault.count > 0 and request.path.startswith(fault.path_prefix):
            fault.count -= 1
            return _fault(fault.status)
    for status, rate in state.fault_rate.items():
        if rate and random.random() < rate:
            return _fault(status)
    if state.latency_s:
        await asyncio.sleep(state.latency_s)
    body = (await request.read()).decode() if request.method == "POST" else ""
    key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    if key:
        fingerprint = hashlib.sha256(f"{request.path}\n{body}".encode()).hexdigest()
        cached = state.idempotency.get(key)
        if cached is not None:
            if cached[0] != fingerprint:
                return _error(
                    StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with.",
                        type_="idempotency_error",
                    )
                )
            return web.Response(
                body=cached[2],
                status=cached[1],
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
    try:
        data = _dispatch(request, state, decode_form(body))
        response = _json(data)
    except StripeError as exc:
        response = _error(exc)
    if key and response.status < 500 and response.body is not None:
        state.idempotency[key] = (fingerprint, response.status, bytes(response.body))  # type: ignore[arg-type]
    return response


def _fault(status: int) -> web.Response:
    if status == 429:
        exc = StripeError(
            429, "Request rate limit exceeded.", type_="invalid_request_error", code="rate_limit"
        )
        return _json(exc.body(), 429, {"Stripe-Should-Retry": "true", "Retry-After": "0"})
    exc = StripeError(status, "An unknown error occurred.", type_="api_error")
    return _json(exc.body(), status, {"Stripe-Should-Retry": "true"})


def _dispatch(request: web.Request, state: StripeSimState, p: dict[str, Any]) -> Any:
    api = _Api(state)
    parts = request.path.strip("/").split("/")
    method, q = request.method, request.query
    match (method, parts):
        case ("POST", ["v1", "customers"]):
            return api.create_customer(p)
        case ("GET", ["v1", "customers"]):
            return _list(list(state.customers.values()), "/v1/customers", q)
        case ("GET", ["v1", "customers", cid]):
            return api.customer(cid)
        case ("POST", ["v1", "billing", "meters"]):
            return api.create_meter(p)
        case ("GET", ["v1", "billing", "meters"]):
            meters = [m for m in state.meters.values() if q.get("status") in (None, m["status"])]
            return _list(meters, "/v1/billing/meters", q)
        case ("GET", ["v1", "billing", "meters", mid]):
            return api.meter(mid)
        case ("POST", ["v1", "billing", "meters", mid, ("deactivate" | "reactivate") as verb]):
            meter = api.meter(mid)
            meter["status"] = "inactive" if verb == "deactivate" else "active"
            meter["status_transitions"]["deactivated_at"] = (
                int(time.time()) if verb == "deactivate" else None
            )
            return meter
        case ("GET", ["v1", "billing", "meters", mid, "event_summaries"]):
            items = api.summaries(mid, q)
            return _list(items, f"/v1/billing/meters/{mid}/event_summaries", q)
        case ("POST", ["v1", "billing", "meter_events"]):
            return api.create_event(p)
        case ("POST", ["v1", "billing", "meter_event_adjustments"]):
            return api.adjust(p)
    raise StripeError(404, f"Unrecognized request URL ({method}: {request.path}).")


async def _admin(request: web.Request, state: StripeSimState) -> web.Response:
    if request.path == "/_sim/stats":
        return _json(state.stats())
    if request.path == "/_sim/faults" and request.method == "POST":
        spec = await request.json()
        if "rate" in spec:
            state.fault_rate = {int(k): float(v) for k, v in spec["rate"].items()}
        if "status" in spec:
            state.faults.append(
                Fault(
                    int(spec["status"]), int(spec.get("count", 1)), spec.get("path_prefix", "/v1/")
                )
            )
        if "latency_s" in spec:
            state.latency_s = float(spec["latency_s"])
        return _json({"ok": True})
    return _json({"error": {"type": "invalid_request_error", "message": "unknown"}}, 404)
