"""One settings object for the whole engine.

Every variable is read from the environment with the prefix ``LLMOPS_`` (or from a ``.env``
file in the working directory) and is listed in ``.env.example`` with its default.
Nothing reads settings at import time: call :func:`get_settings`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Telemetry and network defaults that keep every library offline and quiet. Applied with
#: ``setdefault`` so a user who sets one explicitly keeps their value.
OFFLINE_ENV: dict[str, str] = {
    # LiteLLM fetches its model cost map from the network at import unless told not to.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_TELEMETRY": "False",
    # Prefect and Great Expectations phone home by default.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_UI_ENABLED": "true",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "GE_USAGE_STATISTICS_URL": "",
    "TOKENIZERS_PARALLELISM": "false",
}


class Settings(BaseSettings):
    """Runtime configuration. Field names map to ``LLMOPS_<NAME>`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Field(
        default=Path(".llmops"),
        description="Folder for every local file: ops DB, DuckDB warehouse, Prefect home.",
    )
    database_url: str | None = Field(
        default=None,
        description="Ops DB URL. Default: SQLite at <data_dir>/ops.db. "
        "Postgres: postgresql+psycopg://user@host:5432/db",
    )
    warehouse_path: Path | None = Field(
        default=None, description="DuckDB file. Default: <data_dir>/warehouse.duckdb"
    )
    gateway_config: Path = Field(
        default=Path("config/gateway.yaml"),
        description="Gateway config: model groups, deployments, price book.",
    )
    prompts_dir: Path = Field(default=Path("prompts"), description="Prompt files (*.yaml).")
    evals_dir: Path = Field(
        default=Path("evals"),
        description="Eval content: datasets/*.jsonl, suites/*.yaml, scorers/*.py.",
    )
    actor: str | None = Field(
        default=None,
        description="Who moves prompt labels and runs gates (audit). Default: the OS user.",
    )
    reports_dir: Path = Field(
        default=Path("reports"), description="Report content: queries/*.sql, notebooks."
    )
    sim_config: Path = Field(
        default=Path("config/sim.yaml"), description="Provider simulator profiles."
    )
    redis_url: str | None = Field(
        default=None, description="Redis for shared rate-limit state; ops DB when unset."
    )
    stripe_api_key: SecretStr | None = Field(default=None, description="Stripe secret key.")
    stripe_api_base: str = Field(
        default="https://api.stripe.com", description="Stripe API base URL."
    )
    stripe_test_api_key: SecretStr | None = Field(
        default=None, description="Tests only: a sk_test_ key to run the Stripe suite live."
    )
    billing_config: Path = Field(
        default=Path("config/billing.yaml"), description="Plans, meters, tenant-to-plan map."
    )
    default_max_tokens: int = Field(
        default=1024,
        gt=0,
        description="max_tokens assumed for a request that sets none (budget reservations).",
    )
    redaction_hash_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for PII entities in hash mode (at least 16 characters).",
    )
    log_text: bool = Field(
        default=True,
        description="Store the (redacted) request and response text in the request log.",
    )
    retention_config: Path = Field(
        default=Path("config/retention.yaml"),
        description="How many days request/response text is kept, per tenant.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="Webhook for alerts; saved as the llmops-alerts block by blocks register.",
    )
    prefect_home: Path | None = Field(
        default=None, description="PREFECT_HOME for local runs. Default: <data_dir>/prefect"
    )
    queue_max_payload_bytes: int = Field(
        default=256 * 1024,
        gt=0,
        description="Largest job payload (messages or prompt variables, as JSON) accepted.",
    )
    queue_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="Job lease (visibility timeout); workers heartbeat at a third of it.",
    )
    queue_retry_base_s: float = Field(
        default=2.0, ge=0, description="First retry delay of a job; doubles per attempt."
    )
    queue_retry_max_s: float = Field(
        default=300.0, ge=0, description="Longest delay between two attempts of a job."
    )
    log_wait: bool = Field(
        default=True,
        description=(
            "A gateway call returns once its request_log row (and its spend) is committed. "
            "false: it returns at once and the row commits with the next batch (~1 ms); "
            "shutdown (SIGTERM) still flushes every row, a crash can lose the last batch."
        ),
    )
    log_async_commit: bool = Field(
        default=False,
        description=(
            "Postgres: commit request_log batches without waiting for the WAL flush. "
            "Faster; a crash of the database server (not of llmops) can lose the last "
            "few hundred ms of rows and their spend. Off: every committed row is durable."
        ),
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ops.db').resolve()}"

    @property
    def resolved_warehouse_path(self) -> Path:
        return (self.warehouse_path or self.data_dir / "warehouse.duckdb").resolve()

    @property
    def resolved_prefect_home(self) -> Path:
        return (self.prefect_home or self.data_dir / "prefect").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def apply_offline_env() -> None:
    """Set the offline/no-telemetry defaults (``OFFLINE_ENV``) where the user set nothing.

    Must run before LiteLLM, Prefect or GX is imported: they read these at import.
    """
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def apply_offline_defaults(settings: Settings | None = None) -> None:
    """:func:`apply_offline_env`, plus a per-project ``PREFECT_HOME`` under the data dir."""
    apply_offline_env()
    settings = settings or get_settings()
    os.environ.setdefault("PREFECT_HOME", str(settings.resolved_prefect_home))
