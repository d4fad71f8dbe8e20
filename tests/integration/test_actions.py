"""Actions through the HTTP gateway: calls grouped by X-LLMOps-Action-Id, the outcome
posted to /v1/actions/{id}/outcome, and cost per (successful) action counting every
attempt; plus record_action_outcome as the queue will call it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from llmops.db.engine import session_scope
from llmops.db.models import ActionOutcome, RequestLog
from llmops.errors import ValidationError
from llmops.gateway.core import Gateway
from llmops.gateway.http import create_app
from llmops.ids import utcnow
from llmops.metering.actions import ActionConflict, action_costs, record_action_outcome
from llmops.sim import SimConfig, SimServer
from llmops.tenants import create_tenant

from .test_http_gateway import FEATURE, gateway_config, serve


@pytest.fixture
def base_url(db_engine: Engine) -> Iterator[str]:
    config = SimConfig.model_validate({"seed": 3, "default": {"ttft_ms": 0, "tokens_per_s": 0}})
    with SimServer(config) as sim:
        app = create_app(Gateway(gateway_config(sim.base_url), db_engine), db_engine)
        with serve(app) as url:
            yield url


def _chat(base_url: str, key: str, action: str) -> None:
    client = openai.OpenAI(
        base_url=f"{base_url}/v1",
        api_key=key,
        default_headers=FEATURE | {"X-LLMOps-Action-Id": action},
        max_retries=0,
    )
    client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": f"draft reply {action}"}]
    )


def test_outcomes_over_http_and_cost_per_successful_action(
    db_engine: Engine, base_url: str
) -> None:
    _, key = create_tenant(db_engine, "acme", "Acme")
    _, other_key = create_tenant(db_engine, "globex", "Globex")
    # Action a1 needed two attempts (the app retried after a bad answer); a2 failed.
    _chat(base_url, key, "a1")
    _chat(base_url, key, "a1")
    _chat(base_url, key, "a2")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, timeout=10) as http:
        ok = http.post("/v1/actions/a1/outcome", json={"outcome": "success"}, headers=auth)
        assert ok.status_code == 200, ok.text
        assert ok.json()["outcome"] == "success" and ok.json()["created"] is True
        again = http.post("/v1/actions/a1/outcome", json={"outcome": "success"}, headers=auth)
        assert again.status_code == 200 and again.json()["created"] is False
        conflict = http.post("/v1/actions/a1/outcome", json={"outcome": "failure"}, headers=auth)
        assert conflict.status_code == 409
        assert "already has outcome 'success'" in conflict.json()["error"]["message"]
        failed = http.post("/v1/actions/a2/outcome", json={"outcome": "failure"}, headers=auth)
        assert failed.status_code == 200
        bad = http.post("/v1/actions/a3/outcome", json={"outcome": "maybe"}, headers=auth)
        assert bad.status_code == 400 and "success, failure" in bad.json()["error"]["message"]
        assert http.post("/v1/actions/a3/outcome", content=b"{", headers=auth).status_code == 400
        noauth = http.post("/v1/actions/a3/outcome", json={"outcome": "success"})
        assert noauth.status_code == 401
        # Another tenant's outcome for the same action id is its own action.
        theirs = http.post(
            "/v1/actions/a1/outcome",
            json={"outcome": "failure"},
            headers={"Authorization": f"Bearer {other_key}"},
        )
        assert theirs.status_code == 200
    with Session(db_engine) as session:
        costs = {c.tenant_id: c for c in action_costs(session)}
        calls = session.exec(
            select(RequestLog.action_id, RequestLog.cost_usd).where(
                col(RequestLog.tenant_id) == "acme"
            )
        ).all()
    acme = costs["acme"]
    total = sum((cost for _, cost in calls), Decimal(0))
    a1_cost = sum((cost for action, cost in calls if action == "a1"), Decimal(0))
    assert (acme.actions, acme.successful, acme.failed, acme.calls) == (2, 1, 1, 3)
    assert acme.cost_usd == total > a1_cost > 0
    assert acme.cost_per_action == total / 2
    # Everything spent (both attempts of a1 and the failed a2) per success.
    assert acme.cost_per_successful_action == total


def test_record_action_outcome_is_idempotent_and_final(db_engine: Engine) -> None:
    at = utcnow() - timedelta(minutes=1)
    with session_scope(db_engine) as session:
        row, created = record_action_outcome(
            session, "acme", "job-7", "success", "job", job_id="job_1", at=at
        )
        assert created and row.recorded_at == at
    with session_scope(db_engine) as session:
        row, created = record_action_outcome(session, "acme", "job-7", "success", "job")
        assert not created and row.job_id == "job_1"
        with pytest.raises(ActionConflict, match="outcomes are final"):
            record_action_outcome(session, "acme", "job-7", "failure", "api")
        with pytest.raises(ValidationError, match="outcome must be"):
            record_action_outcome(session, "acme", "job-8", "done", "api")
        with pytest.raises(ValidationError, match="1 to 100"):
            record_action_outcome(session, "acme", "x" * 101, "success", "api")
    with session_scope(db_engine) as session:
        assert len(session.exec(select(ActionOutcome)).all()) == 1
