"""URL handling in the engine factory and the schema's naming rules, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import SQLModel

from llmops.db.engine import describe_url, engine_from_settings, make_engine
from llmops.db.models import Job
from llmops.errors import ConfigError
from llmops.settings import Settings


def test_a_plain_postgresql_url_uses_psycopg_3() -> None:
    engine = make_engine("postgresql://u:pw@db.internal/ops")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("mysql+pymysql://u:secret@h/d", "backend"),
        ("postgresql+asyncpg://u:secret@h/d", "driver"),
        ("not a url at all, secret", "url"),
    ],
)
def test_unsupported_urls_are_config_errors_without_the_password(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_engine(url)
    assert caught.value.field == field
    assert "secret" not in str(caught.value)


def test_describe_url_names_the_place_never_the_password() -> None:
    assert describe_url("postgresql+psycopg://u:secret@10.0.0.5:6543/ops") == "10.0.0.5:6543/ops"
    assert describe_url("postgresql+psycopg://u@db/ops") == "db:5432/ops"
    assert describe_url("sqlite:////var/lib/llmops/ops.db") == "/var/lib/llmops/ops.db"


def test_engine_from_settings_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    engine = engine_from_settings(Settings(data_dir=tmp_path, database_url=None))
    assert engine.dialect.name == "sqlite"
    assert engine.url.database == str((tmp_path / "ops.db").resolve())
    engine.dispose()


def test_constraints_have_stable_names_for_later_migrations() -> None:
    jobs = SQLModel.metadata.tables["jobs"]
    names = {constraint.name for constraint in jobs.constraints}
    assert {"pk_jobs", "fk_jobs_tenant_id_tenants", "uq_jobs_tenant_idem"} <= names
    tenants = SQLModel.metadata.tables["tenants"]
    assert "uq_tenants_api_key_hash" in {constraint.name for constraint in tenants.constraints}


def test_optional_timestamps_default_to_none() -> None:
    job = Job.model_validate({"id": "job_1", "tenant_id": "t", "feature_id": "f"})
    assert job.not_before is None and job.completed_at is None
    assert job.created_at.tzinfo is not None
