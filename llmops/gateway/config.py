"""``config/gateway.yaml``: model groups, deployments, fallbacks and the price book.

Validated on load; any problem raises :class:`llmops.errors.ConfigError` with the file,
the field and the reason. Strings may use ``${VAR}`` or ``${VAR:-default}``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from llmops.configfile import load_yaml_model
from llmops.errors import ConfigError
from llmops.gateway.pricebook import Price, PriceBook
from llmops.gateway.ratelimit_core import RateLimitConfig
from llmops.gateway.redaction import RedactionPolicy

_STRICT = ConfigDict(extra="forbid", frozen=True)
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class RetryPolicy(BaseModel):
    """Retries on the same model group, per error class, before its fallbacks are tried.

    ``None`` means the default (``settings.num_retries``). A 429 defaults to no retry: with
    a fallback configured, moving on is faster than waiting out the provider's Retry-After.
    """

    model_config = _STRICT

    rate_limit: int | None = Field(default=0, ge=0, le=10)
    server_error: int | None = Field(default=None, ge=0, le=10)
    timeout: int | None = Field(default=None, ge=0, le=10)
    connection: int | None = Field(default=None, ge=0, le=10)


class Deployment(BaseModel):
    """One concrete model endpoint that can serve a model group."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, description="LiteLLM model string, e.g. openai/gpt-4o-mini")
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    price: str | None = Field(default=None, description="Price book model; default: model")
    max_input_tokens: int | None = Field(default=None, gt=0, description="Context window.")
    max_output_tokens: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    weight: int | None = Field(default=None, gt=0)

    @property
    def price_model(self) -> str:
        return self.price or self.model

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"


class ModelGroup(BaseModel):
    """A public model name served by one or more deployments."""

    model_config = _STRICT

    deployments: list[Deployment] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)
    content_policy_fallbacks: list[str] = Field(default_factory=list)
    timeout_s: PositiveFloat | None = None
    retries: RetryPolicy | None = None


class PriceEntry(BaseModel):
    """A price of one model from a date on, in USD per million tokens."""

    model_config = _STRICT

    model: str = Field(min_length=1)
    effective_from: date = date(2000, 1, 1)
    free: bool = False
    input_per_mtok: Money | None = None
    output_per_mtok: Money | None = None
    cached_input_per_mtok: Money | None = None
    reasoning_per_mtok: Money | None = None

    @field_validator(
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "reasoning_per_mtok",
        mode="before",
    )
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        # YAML reads 0.15 as a float; go through its shortest repr so 0.15 stays exactly 0.15.
        return repr(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _priced_or_free(self) -> PriceEntry:
        if not self.free and (self.input_per_mtok is None or self.output_per_mtok is None):
            raise ValueError(
                "needs input_per_mtok and output_per_mtok, or free: true to mark it free"
            )
        return self

    def to_price(self) -> Price:
        zero = Decimal(0)
        inp = self.input_per_mtok if self.input_per_mtok is not None else zero
        out = self.output_per_mtok if self.output_per_mtok is not None else zero
        return Price(
            model=self.model,
            effective_from=self.effective_from,
            input_per_mtok=inp,
            output_per_mtok=out,
            cached_input_per_mtok=(
                self.cached_input_per_mtok if self.cached_input_per_mtok is not None else inp
            ),
            reasoning_per_mtok=(
                self.reasoning_per_mtok if self.reasoning_per_mtok is not None else out
            ),
            free=self.free,
        )


class CachePolicy(BaseModel):
    """Exact-match response cache for one feature (off unless turned on)."""

    model_config = _STRICT

    enabled: bool = False
    ttl_s: PositiveFloat = 3600.0


class DegradePolicy(BaseModel):
    """What a feature gets when every deployment failed or a hard cap is reached, and
    where it goes once a soft cap passes a threshold."""

    model_config = _STRICT

    on_failure: Literal["error", "stale", "static"] = "error"
    stale_max_age_s: PositiveFloat = 86400.0
    static_response: str | None = None
    soft_cap_model_group: str | None = None
    soft_cap_threshold_pct: int = Field(default=80, ge=1, le=100)

    @model_validator(mode="after")
    def _static_needs_text(self) -> DegradePolicy:
        if self.on_failure == "static" and not self.static_response:
            raise ValueError("on_failure: static needs a static_response")
        return self


class FeaturePolicy(BaseModel):
    """Per-feature gateway behaviour."""

    model_config = _STRICT

    cache: CachePolicy = Field(default_factory=CachePolicy)
    degrade: DegradePolicy = Field(default_factory=DegradePolicy)


_DEFAULT_FEATURE = FeaturePolicy()


class GatewaySettings(BaseModel):
    """Defaults for every model group."""

    model_config = _STRICT

    timeout_s: PositiveFloat = 60.0
    num_retries: int = Field(default=1, ge=0, le=10)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    cooldown_s: float = Field(default=30.0, ge=0, description="Rest for a failing deployment.")
    allowed_fails: int = Field(default=3, ge=0, description="Failures a minute before cooldown.")


class RedactionConfig(BaseModel):
    """PII redaction: a default policy, overridden per tenant, per feature, per both.

    Overrides set only what they change, e.g. ``{entities: {EMAIL: hash}}``; a tenant's
    ``features:`` entry applies to that tenant's calls of that feature.
    """

    model_config = _STRICT

    default: RedactionPolicy = Field(default_factory=RedactionPolicy)
    tenants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    features: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> RedactionConfig:
        for tenant_id, tenant in self.tenants.items():
            self.policy_for(self.default, tenant_id, "")
            for feature_id in tenant.get("features", {}):
                self.policy_for(self.default, tenant_id, feature_id)
        for feature_id in self.features:
            self.policy_for(self.default, "", feature_id)
        return self

    def policy_for(self, base: RedactionPolicy, tenant_id: str, feature_id: str) -> RedactionPolicy:
        """``base``, then the tenant's override, the feature's, and the tenant's feature's."""
        tenant = self.tenants.get(tenant_id, {})
        policy = base.merged({k: v for k, v in tenant.items() if k != "features"} or None)
        policy = policy.merged(self.features.get(feature_id))
        return policy.merged(tenant.get("features", {}).get(feature_id))


class GatewayConfig(BaseModel):
    """The whole gateway file."""

    model_config = _STRICT

    settings: GatewaySettings = Field(default_factory=GatewaySettings)
    model_groups: dict[str, ModelGroup] = Field(min_length=1)
    prices: list[PriceEntry] = Field(default_factory=list)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    features: dict[str, FeaturePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_check(self) -> GatewayConfig:
        seen: set[str] = set()
        priced = {p.model for p in self.prices}
        for group_name, group in self.model_groups.items():
            for i, dep in enumerate(group.deployments):
                where = f"model_groups.{group_name}.deployments[{i}]"
                if dep.id in seen:
                    raise ValueError(f"{where}.id: deployment id {dep.id!r} is used twice")
                seen.add(dep.id)
                if dep.price_model not in priced:
                    raise ValueError(
                        f"{where}.model: no price for {dep.price_model!r} in prices "
                        "(add one, or an entry with free: true)"
                    )
            for kind in _FALLBACK_KINDS:
                for j, fallback in enumerate(getattr(group, kind)):
                    where = f"model_groups.{group_name}.{kind}[{j}]"
                    if fallback not in self.model_groups:
                        raise ValueError(f"{where}: unknown model group {fallback!r}")
                    if fallback == group_name:
                        raise ValueError(f"{where}: a group cannot fall back to itself")
        for feature_id, feature in self.features.items():
            cheaper = feature.degrade.soft_cap_model_group
            if cheaper is not None and cheaper not in self.model_groups:
                raise ValueError(
                    f"features.{feature_id}.degrade.soft_cap_model_group: "
                    f"unknown model group {cheaper!r}"
                )
        for kind in _FALLBACK_KINDS:
            graph = {name: list(getattr(g, kind)) for name, g in self.model_groups.items()}
            cycle = _find_cycle(graph)
            if cycle:
                raise ValueError(
                    f"model_groups.{cycle[0]}.{kind}: fallback cycle {' -> '.join(cycle)}"
                )
        return self

    def feature(self, feature_id: str) -> FeaturePolicy:
        """The feature's policy, or the defaults (no cache, plain errors)."""
        return self.features.get(feature_id, _DEFAULT_FEATURE)

    def price_book(self) -> PriceBook:
        return PriceBook([p.to_price() for p in self.prices])

    def deployment(self, deployment_id: str) -> Deployment | None:
        for group in self.model_groups.values():
            for dep in group.deployments:
                if dep.id == deployment_id:
                    return dep
        return None


_FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a path that returns to its start, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (found := visit(start)):
            return found
    return None


def load_gateway_config(path: Path, env: dict[str, str] | None = None) -> GatewayConfig:
    """Read and validate a gateway config file."""
    try:
        return load_yaml_model(path, GatewayConfig, env)
    except ConfigError as exc:
        # Cross-field checks report "field: reason" inside the reason; lift the field out.
        if (
            exc.field == "(top level)"
            and ": " in exc.reason
            and exc.reason.startswith(("model_groups.", "prices"))
        ):
            field, _, why = exc.reason.partition(": ")
            raise ConfigError(exc.file, field, why) from None
        raise
