"""Prefect blocks: secrets and connections, registered idempotently (see issue on operations)."""
