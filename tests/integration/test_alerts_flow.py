"""The alerts flow: detectors raise, the webhook block delivers once, a dead webhook is
recorded and reported without failing the flow."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from blocks.register import register_blocks
from llmops.alerts import list_alerts
from llmops.db.engine import make_engine
from llmops.db.migrate import upgrade
from llmops.db.models import RequestLog
from llmops.ids import new_id, utcnow
from llmops.settings import get_settings


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    monkeypatch.setenv("LLMOPS_DATABASE_URL", url)
    get_settings.cache_clear()
    upgrade(url)
    engine = make_engine(url)
    now = utcnow() - timedelta(minutes=1)
    with Session(engine) as session:
        for i in range(30):
            session.add(
                RequestLog(
                    request_id=new_id("req"),
                    started_at=now,
                    ended_at=now,
                    tenant_id="acme",
                    feature_id="chat",
                    model_group="chat-small",
                    status="error" if i % 2 else "ok",
                )
            )
        session.commit()
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_alert_is_delivered_once_through_the_webhook_block(
    prefect_server: None, ops: Engine, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    from flows.alerts import alerts

    url, received = webhook
    register_blocks({"LLMOPS_ALERT_WEBHOOK_URL": url})
    first = asyncio.run(alerts())
    assert [r["kind"] for r in first["raised"]] == ["provider_errors"]
    assert len(first["sent"]) == 1 and first["failed"] == []
    assert len(received) == 1
    assert received[0]["subject"].startswith("[llmops] critical: model group chat-small: 50%")
    assert "runbook: docs/runbooks/provider-errors.md" in received[0]["body"]

    second = asyncio.run(alerts())
    assert second["raised"][0]["new"] is False and second["sent"] == []
    assert len(received) == 1  # the same condition is not delivered twice
    assert list_alerts(ops)[0].occurrences == 2


def test_unreachable_webhook_never_fails_the_flow(prefect_server: None, ops: Engine) -> None:
    from flows.alerts import alerts

    register_blocks({"LLMOPS_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{_free_port()}/down"})
    result = asyncio.run(alerts())
    assert result["sent"] == [] and len(result["failed"]) == 1
    [alert] = list_alerts(ops)
    assert alert.delivered_at is None and alert.delivery_attempts == 1
    assert alert.delivery_error and "ConnectError" in alert.delivery_error
