"""Prefect blocks: Prefect's standard block suite, idempotent registration, secret loading."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites.blocks import BlockStandardTestSuite

from blocks.llmops_blocks import LLMOpsSecret, OpsDatabase
from blocks.register import register_blocks
from blocks.secrets import apply_block_secrets


@pytest.mark.parametrize("block_class", [LLMOpsSecret, OpsDatabase])
class TestStandardSuite(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block_class: type[Block]) -> type[Block]:
        return block_class


def test_register_is_idempotent_and_flows_read_the_secrets(prefect_server: None) -> None:
    env = {
        "OPENAI_API_KEY": "sk-test-one",
        "LLMOPS_STRIPE_API_KEY": "sk_test_stripe",
        "LLMOPS_DATABASE_URL": "postgresql+psycopg://ops@db:5432/llmops",
        "UNRELATED": "ignored",
    }
    first = {r.block: r.action for r in register_blocks(env)}
    assert first == {
        "llmops-secret/openai-api-key": "created",
        "llmops-secret/llmops-stripe-api-key": "created",
        "llmops-ops-database/ops-database": "created",
    }
    assert {r.action for r in register_blocks(env)} == {"unchanged"}

    rotated = {**env, "OPENAI_API_KEY": "sk-test-two"}
    again = {r.block: r.action for r in register_blocks(rotated)}
    assert again["llmops-secret/openai-api-key"] == "updated"
    assert again["llmops-secret/llmops-stripe-api-key"] == "unchanged"
    assert LLMOpsSecret.load("openai-api-key").value.get_secret_value() == "sk-test-two"  # type: ignore[union-attr]

    # Outside a deployment the environment rules: nothing is loaded.
    local: dict[str, str] = {}
    assert apply_block_secrets(local) == []
    assert local == {}
    # In a deployment (forced here) every saved secret and the database URL are applied.
    deployed: dict[str, str] = {"OPENAI_API_KEY": "stale-worker-value"}
    applied = apply_block_secrets(deployed, force=True)
    assert set(applied) >= {"OPENAI_API_KEY", "LLMOPS_STRIPE_API_KEY", "LLMOPS_DATABASE_URL"}
    assert deployed["OPENAI_API_KEY"] == "sk-test-two"
    assert deployed["LLMOPS_STRIPE_API_KEY"] == "sk_test_stripe"
    assert deployed["LLMOPS_DATABASE_URL"] == "postgresql+psycopg://ops@db:5432/llmops"


def test_secret_block_rejects_a_bad_variable_name() -> None:
    with pytest.raises(ValueError, match="env_var"):
        LLMOpsSecret(env_var="not a var", value="x")


def test_secrets_load_inside_an_async_flow(prefect_server: None) -> None:
    """Deployed flows are async: loading blocks there must not hand back coroutines."""
    import asyncio

    from prefect import flow

    register_blocks({"ANTHROPIC_API_KEY": "sk-ant-flow", "LLMOPS_DATABASE_URL": "sqlite:///x.db"})

    @flow
    async def probe() -> dict[str, str]:
        env: dict[str, str] = {}
        apply_block_secrets(env, force=True)
        return env

    env = asyncio.run(probe())
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-flow"
    assert env["LLMOPS_DATABASE_URL"] == "sqlite:///x.db"
