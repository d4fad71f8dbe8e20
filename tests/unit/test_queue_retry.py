"""Job failure classes, retry backoff and callback signatures (no server)."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from llmops.errors import (
    BudgetExceeded,
    ContentPolicyError,
    PolicyBlocked,
    PricingError,
    RateLimited,
    RetryableError,
    ValidationError,
)
from llmops.queue.callbacks import sign, verify
from llmops.queue.retry import backoff_s, classify
from llmops.queue.spec import JobSpec


@pytest.mark.parametrize(
    ("exc", "retryable", "error_class"),
    [
        (RetryableError("timed out", error_class="timeout"), True, "timeout"),
        (RetryableError("503", error_class="service_unavailable"), True, "service_unavailable"),
        (RateLimited("slow down", retry_after_s=7), True, "rate_limited"),
        (ValidationError("prompt gone"), False, "validation"),
        (ContentPolicyError("refused"), False, "content_policy"),
        (PolicyBlocked("pii"), False, "pii_blocked"),
        (BudgetExceeded("cap"), False, "budget_exceeded"),
        (PricingError("unpriced"), False, "pricing"),
        (RuntimeError("bug"), False, "internal"),
    ],
)
def test_failures_are_classified_retryable_or_permanent(
    exc: Exception, retryable: bool, error_class: str
) -> None:
    failure = classify(exc, budgets=None, tenant_id="acme", feature_id="f")
    assert (failure.retryable, failure.error_class) == (retryable, error_class)
    assert failure.message


def test_a_rate_limit_keeps_its_retry_after() -> None:
    failure = classify(
        RateLimited("x", retry_after_s=7), budgets=None, tenant_id="a", feature_id="f"
    )
    assert failure.retry_after_s == 7
    assert backoff_s(1, base_s=1, max_s=60, retry_after_s=7) >= 7


def test_backoff_doubles_with_jitter_within_half_and_the_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 30.0)]:
        delays = [backoff_s(attempt, base_s=2, max_s=30, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not synchronized


def test_signatures_are_hmac_sha256_over_the_exact_body() -> None:
    body = b'{"job": {"id": "job_1"}}'
    expected = hmac.new(b"whsec_x", body, hashlib.sha256).hexdigest()
    assert sign("whsec_x", body) == f"sha256={expected}"
    assert verify("whsec_x", body, sign("whsec_x", body))
    assert not verify("whsec_y", body, sign("whsec_x", body))
    assert not verify("whsec_x", body + b"\n", sign("whsec_x", body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "feature: Field required"),
        ({"feature": "f"}, "exactly one of prompt or messages"),
        ({"feature": "f", "messages": [{"content": "x"}]}, "messages\\[0\\] needs a role"),
        ({"feature": "f", "messages": [{"role": "user", "content": "x"}], "extra": 1}, "extra"),
        (
            {"feature": "f", "messages": [{"role": "user", "content": "x"}], "priority": 10**6},
            "priority",
        ),
    ],
)
def test_job_specs_refuse_malformed_bodies_in_one_line(
    body: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        JobSpec.parse(body)
    assert "\n" not in str(caught.value)


def test_a_budget_refusal_retries_only_if_the_call_fits_once_holds_settle() -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from llmops.gateway.budget_types import CapStatus

    def cap(spent: str, reserved: str) -> CapStatus:
        return CapStatus(
            id=1,
            scope_key="tenant:acme",
            tenant_id="acme",
            feature_id=None,
            period="day",
            mode="hard",
            limit_usd=Decimal("1.00"),
            window_start=datetime(2026, 11, 28, tzinfo=UTC),
            spent_usd=Decimal(spent),
            reserved_usd=Decimal(reserved),
        )

    class Budgets:
        def __init__(self, status: CapStatus) -> None:
            self.status = status

        def list_caps(self) -> list[CapStatus]:
            return [self.status]

    refused = BudgetExceeded("spend cap tenant:acme (day) would be exceeded")
    refused.needed_usd = Decimal("0.30")
    held = Budgets(cap("0.50", "0.50"))  # holds fill it; 0.50 left once they settle
    spent = Budgets(cap("0.80", "0.20"))  # only 0.20 can ever come back: 0.30 never fits
    for budgets, retryable in ((held, True), (spent, False)):
        failure = classify(refused, budgets=budgets, tenant_id="acme", feature_id="f")  # type: ignore[arg-type]
        assert (failure.error_class, failure.retryable) == ("budget_exceeded", retryable)
