"""Prefect flows: thin wiring of tasks to the engine in ``llmops/``, one file per pipeline."""
