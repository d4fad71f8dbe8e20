"""Admission: everything the gateway decides before a request may leave.

In order: validate, redact PII (the provider and the log see only placeholders), count the
input tokens and check them against the context windows and output limits, take the rate
limits, and reserve the worst-case cost on every spend cap. After the call, :meth:`settle`
books the actual tokens and cost; after a failure, :meth:`release` gives everything back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from llmops.errors import ValidationError
from llmops.gateway.budget_leases import CapLeases, LeaseHold
from llmops.gateway.budget_types import worst_case_cost
from llmops.gateway.config import Deployment, GatewayConfig
from llmops.gateway.ratelimit_core import Permit, RateLimiter
from llmops.gateway.redaction import Redaction, Redactor

_MAX_ID = 64


@dataclass
class Admission:
    """What admission decided and holds for one request."""

    messages: list[dict[str, Any]]
    redaction: Redaction | None = None
    input_tokens: int = 0
    max_tokens: int = 0
    permit: Permit | None = None
    #: The worst case held on the process's lease of every spend cap that applies.
    hold: LeaseHold | None = None
    #: Set when a stream was abandoned: what it cost so far, to settle instead of release.
    partial_cost: Decimal | None = None
    partial_tokens: int = 0

    def restore(self, text: str) -> str:
        return self.redaction.restore(text) if self.redaction is not None else text


class Admitter:
    """Runs admission with the gateway's config, limiter and budgets."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        limiter: RateLimiter,
        leases: CapLeases,
        default_max_tokens: int,
        hash_key: str | None = None,
    ) -> None:
        self.config = config
        self.limiter = limiter
        self.leases = leases
        self.default_max_tokens = default_max_tokens
        base = config.redaction.default
        self._base_policy = (
            base if base.hash_key or not hash_key else base.merged({"hash_key": hash_key})
        )
        self._redactor = lru_cache(maxsize=1024)(self._build_redactor)
        self._prices = config.price_book()
        self._known_limits: dict[str, tuple[int | None, int | None]] = {}

    # -- checks that need no I/O --------------------------------------------------------

    def validate(
        self, tenant_id: str, feature_id: str, group: str, messages: Any, max_tokens: int | None
    ) -> None:
        for what, value in (("tenant_id", tenant_id), ("feature_id", feature_id)):
            if not value or len(value) > _MAX_ID:
                raise ValidationError(f"{what} must be 1-{_MAX_ID} characters")
        if group not in self.config.model_groups:
            known = ", ".join(sorted(self.config.model_groups))
            raise ValidationError(f"unknown model group {group!r} (known: {known})")
        if not isinstance(messages, list) or not messages:
            raise ValidationError("messages must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise ValidationError(f"messages[{i}] must be an object with a role")
        if max_tokens is not None and max_tokens <= 0:
            raise ValidationError("max_tokens must be positive")

    def redact(self, tenant_id: str, feature_id: str, messages: list[dict[str, Any]]) -> Admission:
        redactor = self._redactor(tenant_id, feature_id)
        if redactor is None:
            return Admission(messages=messages)
        redaction = redactor.redact_messages(messages)
        return Admission(messages=redaction.messages, redaction=redaction)

    def measure(self, adm: Admission, group: str, max_tokens: int | None) -> None:
        """Count input tokens; refuse what no deployment of the group could serve.

        A deployment's limits are its declared ``max_input_tokens`` / ``max_output_tokens``,
        else LiteLLM's published ones for its model; a check runs only when every
        deployment concerned has a known limit.
        """
        deployments = self._candidates(group, context=True)
        adm.input_tokens = _count_tokens(
            self.config.model_groups[group].deployments[0].model, adm.messages
        )
        windows = [self._limits(d)[0] for d in deployments]
        if windows and all(w is not None for w in windows):
            largest = max(w for w in windows if w is not None)
            if adm.input_tokens > largest:
                raise ValidationError(
                    f"the prompt is {adm.input_tokens} tokens, more than the largest context "
                    f"window of model group {group!r} and its fallbacks ({largest})"
                )
        limits = [self._limits(d)[1] for d in self.config.model_groups[group].deployments]
        if max_tokens is not None and limits and all(m is not None for m in limits):
            top = max(m for m in limits if m is not None)
            if max_tokens > top:
                raise ValidationError(
                    f"max_tokens {max_tokens} is above what model group {group!r} can "
                    f"produce ({top})"
                )
        adm.max_tokens = max_tokens if max_tokens is not None else self.default_max_tokens

    def _limits(self, dep: Deployment) -> tuple[int | None, int | None]:
        """(context window, output limit) of ``dep``: declared, else LiteLLM's."""
        known = self._known_limits.get(dep.id)
        if known is None:
            info = _model_limits(dep.model)
            known = (
                dep.max_input_tokens if dep.max_input_tokens is not None else info[0],
                dep.max_output_tokens if dep.max_output_tokens is not None else info[1],
            )
            self._known_limits[dep.id] = known
        return known

    # -- holds (I/O) --------------------------------------------------------------------

    async def hold(
        self,
        adm: Admission,
        *,
        tenant_id: str,
        feature_id: str,
        group: str,
        at: datetime,
    ) -> None:
        """Take the rate limits, then hold the worst case on every spend cap.

        Both come from this process's leases (no DB round trip) unless a lease must grow.
        """
        rules = self.config.rate_limits.rules_for(tenant_id, feature_id)
        adm.permit = await self.limiter.acquire(rules, tokens=adm.input_tokens + adm.max_tokens)
        amount = self.worst_case(group, adm.input_tokens, adm.max_tokens, at)
        adm.hold = await self.leases.hold(tenant_id, feature_id, amount)

    async def settle(self, adm: Admission, *, tokens: int, cost: Decimal) -> None:
        """Book the actual tokens and cost of a call that returned (the cost reaches the
        ledger with the request log's next commit)."""
        if adm.permit is not None:
            await self.limiter.settle(adm.permit, actual_tokens=tokens)
        if adm.hold is not None:
            self.leases.settle(adm.hold, cost)

    async def release(self, adm: Admission) -> None:
        """Give back what a failed call held (nothing was billed)."""
        if adm.permit is not None:
            await self.limiter.settle(adm.permit, actual_tokens=0)
        if adm.hold is not None:
            self.leases.release(adm.hold)

    def worst_case(self, group: str, input_tokens: int, max_tokens: int, at: datetime) -> Decimal:
        """The most the call can cost on any deployment it may reach (fallbacks included)."""
        return max(
            (
                worst_case_cost(self._prices.price_for(d.price_model, at), input_tokens, max_tokens)
                for d in self._candidates(group, context=True)
            ),
            default=Decimal(0),
        )

    # -- helpers ------------------------------------------------------------------------

    def _candidates(self, group: str, *, context: bool) -> list[Deployment]:
        groups = [group, *self.config.model_groups[group].fallbacks]
        if context:
            groups += self.config.model_groups[group].context_window_fallbacks
        seen: dict[str, Deployment] = {}
        for name in groups:
            for dep in self.config.model_groups[name].deployments:
                seen.setdefault(dep.id, dep)
        return list(seen.values())

    def _build_redactor(self, tenant_id: str, feature_id: str) -> Redactor | None:
        policy = self.config.redaction.policy_for(self._base_policy, tenant_id, feature_id)
        return Redactor(policy) if policy.enabled else None


@lru_cache(maxsize=256)
def _model_limits(model: str) -> tuple[int | None, int | None]:
    """LiteLLM's published (max input, max output) tokens for ``model``; None where unknown
    (an open-weights model behind its own ``api_base``, a name LiteLLM does not list)."""
    import litellm

    try:
        info = litellm.get_model_info(model)
    except Exception:
        return None, None

    def positive(key: str) -> int | None:
        value = info.get(key)
        return int(value) if isinstance(value, int) and value > 0 else None

    return positive("max_input_tokens"), positive("max_output_tokens")


def _count_tokens(model: str, messages: list[dict[str, Any]]) -> int:
    """Input tokens as the model's tokenizer counts them (LiteLLM ships the tokenizers)."""
    import litellm

    try:
        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:
        return len(json.dumps(messages, ensure_ascii=False)) // 3 + 1


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of a plain text (e.g. a partial answer) with the model's tokenizer."""
    import litellm

    if not text:
        return 0
    try:
        return int(litellm.token_counter(model=model, text=text))
    except Exception:
        return len(text) // 3 + 1
