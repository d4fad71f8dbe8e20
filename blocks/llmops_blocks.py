"""llmops's Prefect blocks: secrets (provider keys, the Stripe key) and the ops database.

Saved from the environment by ``llmops blocks register``; read back by
:func:`blocks.secrets.apply_block_secrets` when a flow runs in a deployment.
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

_DOCS = HttpUrl("https://github.com/llmops/llmops/blob/main/docs/operations.md#blocks")
_LOGO = HttpUrl(
    "https://cdn.sanity.io/images/3ugk85nk/production/c6f20e556dd16effda9df16551feecfb5822092b-48x48.png"
)


class LLMOpsSecret(Block):
    """A secret that llmops reads from one environment variable when run locally.

    Provider API keys (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, …), the Stripe key
    (``LLMOPS_STRIPE_API_KEY``) and the redaction hash key are saved as these blocks, so a
    deployed flow gets them from Prefect rather than from the worker's environment.
    """

    _block_type_name = "llmops Secret"
    _block_type_slug = "llmops-secret"
    _logo_url: ClassVar[HttpUrl | None] = _LOGO
    _documentation_url: ClassVar[HttpUrl | None] = _DOCS
    _code_example = """
        from blocks.llmops_blocks import LLMOpsSecret

        secret = LLMOpsSecret.load("BLOCK_NAME")
        secret.value.get_secret_value()
    """

    env_var: str = Field(
        description="The environment variable this secret stands for, e.g. OPENAI_API_KEY.",
        pattern=r"^[A-Z][A-Z0-9_]*$",
    )
    value: SecretStr = Field(description="The secret value.")


class OpsDatabase(Block):
    """The connection to llmops's ops database (SQLite file or PostgreSQL server)."""

    _block_type_name = "llmops Ops Database"
    _block_type_slug = "llmops-ops-database"
    _logo_url: ClassVar[HttpUrl | None] = _LOGO
    _documentation_url: ClassVar[HttpUrl | None] = _DOCS
    _code_example = """
        from blocks.llmops_blocks import OpsDatabase

        database = OpsDatabase.load("BLOCK_NAME")
        database.url.get_secret_value()
    """

    url: SecretStr = Field(
        description=(
            "SQLAlchemy URL, e.g. postgresql+psycopg://user:password@host:5432/llmops "
            "or sqlite:///path/to/ops.db."
        )
    )
