"""Prefect flows: thin wiring of tasks to the engine in ``llmops/``, one file per pipeline."""

from llmops.settings import apply_offline_env

# Before any flow module imports Prefect (and, through the gateway, LiteLLM).
apply_offline_env()
