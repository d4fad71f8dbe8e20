"""``llmops blocks register``: save llmops's blocks from the environment, idempotently."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from pydantic import SecretStr

from blocks.llmops_blocks import LLMOpsSecret, OpsDatabase
from blocks.secrets import DATABASE_BLOCK

#: Environment variables saved as ``llmops-secret`` blocks when set.
SECRET_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "AZURE_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "LLMOPS_STRIPE_API_KEY",
    "LLMOPS_REDACTION_HASH_KEY",
)
ALERT_BLOCK = "llmops-alerts"


@dataclass(frozen=True)
class Registered:
    block: str  # "<type slug>/<name>"
    action: str  # created | updated | unchanged


def block_name(env_var: str) -> str:
    """``OPENAI_API_KEY`` -> ``openai-api-key``."""
    return env_var.lower().replace("_", "-")


def register_blocks(env: Mapping[str, str] | None = None) -> list[Registered]:
    """Save a block for each secret set in ``env``, the ops DB URL and the alert webhook."""
    env = os.environ if env is None else env
    done: list[Registered] = []
    for var in SECRET_VARS:
        if env.get(var):
            secret = LLMOpsSecret(env_var=var, value=SecretStr(env[var]))
            done.append(_save(secret, block_name(var), {"env_var": var, "value": env[var]}))
    if env.get("LLMOPS_DATABASE_URL"):
        url = env["LLMOPS_DATABASE_URL"]
        done.append(_save(OpsDatabase(url=SecretStr(url)), DATABASE_BLOCK, {"url": url}))
    if env.get("LLMOPS_ALERT_WEBHOOK_URL"):
        done.append(_save_webhook(env["LLMOPS_ALERT_WEBHOOK_URL"]))
    return done


def _save(block: LLMOpsSecret | OpsDatabase, name: str, plain: dict[str, str]) -> Registered:
    label = f"{block.get_block_type_slug()}/{name}"
    try:
        existing = cast(LLMOpsSecret | OpsDatabase, type(block).load(name))
    except ValueError:
        block.save(name)
        return Registered(label, "created")
    if _plain(existing) == plain:
        return Registered(label, "unchanged")
    block.save(name, overwrite=True)
    return Registered(label, "updated")


def _plain(block: LLMOpsSecret | OpsDatabase) -> dict[str, str]:
    if isinstance(block, LLMOpsSecret):
        return {"env_var": block.env_var, "value": block.value.get_secret_value()}
    return {"url": block.url.get_secret_value()}


def _save_webhook(url: str) -> Registered:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    label = f"custom-webhook/{ALERT_BLOCK}"
    wanted = {"subject": "{{subject}}", "body": "{{body}}", "source": "llmops"}
    try:
        existing = cast(
            CustomWebhookNotificationBlock, CustomWebhookNotificationBlock.load(ALERT_BLOCK)
        )
    except ValueError:
        existing = None
    if existing is not None and str(existing.url) == url and existing.json_data == wanted:
        return Registered(label, "unchanged")
    block = CustomWebhookNotificationBlock(
        name="llmops alerts", url=url, method="POST", json_data=wanted
    )
    block.save(ALERT_BLOCK, overwrite=True)
    return Registered(label, "created" if existing is None else "updated")
