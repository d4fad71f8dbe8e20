"""Ops DB revisions, oldest first (v0001_...); Alembic ignores this file."""
