"""One way for flows to get secrets: from blocks when deployed, from the environment locally.

:func:`apply_block_secrets` is called by ``flows/_common.settings()``. In a deployment run it
loads every saved ``llmops-secret`` block and the ``ops-database`` block into the process
environment (so ``config/gateway.yaml``'s ``${OPENAI_API_KEY}`` and the ``LLMOPS_*``
settings see them); outside a deployment it changes nothing and the environment rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, MutableMapping
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

DATABASE_BLOCK = "ops-database"


def in_deployment() -> bool:
    """Whether this process runs a flow run that came from a deployment."""
    from prefect.runtime import deployment

    return bool(deployment.id)


def apply_block_secrets(
    env: MutableMapping[str, str] | None = None, *, force: bool = False
) -> list[str]:
    """Load saved blocks into ``env`` when deployed (or ``force``); the variables set."""
    if not (force or in_deployment()):
        return []
    from prefect.client.orchestration import get_client

    from blocks.llmops_blocks import LLMOpsSecret, OpsDatabase

    target = os.environ if env is None else env
    applied: list[str] = []
    # The sync client, not Block.load: this runs inside async flows, where Block.load
    # would hand back a coroutine.
    with get_client(sync_client=True) as client:
        documents = _missing_is_empty(
            lambda: client.read_block_documents_by_type("llmops-secret"), []
        )
        database = _missing_is_empty(
            lambda: [client.read_block_document_by_name(DATABASE_BLOCK, "llmops-ops-database")],
            [],
        )
    for document in documents:
        secret = LLMOpsSecret.model_validate(document.data)
        target[secret.env_var] = secret.value.get_secret_value()
        applied.append(secret.env_var)
    if database:
        url = OpsDatabase.model_validate(database[0].data).url.get_secret_value()
        target["LLMOPS_DATABASE_URL"] = url
        applied.append("LLMOPS_DATABASE_URL")
    else:
        log.info("no %r block saved; the ops DB URL comes from the environment", DATABASE_BLOCK)
    if applied:
        from llmops.settings import get_settings

        get_settings.cache_clear()
    return applied


def _missing_is_empty(read: Callable[[], list[T]], empty: list[T]) -> list[T]:
    """``read()``, or ``empty`` when the block type or document does not exist (404)."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        return read()
    except ObjectNotFound:
        return empty
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        return empty
