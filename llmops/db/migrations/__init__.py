"""Alembic environment and revisions for the ops DB; run them through llmops.db.migrate."""
