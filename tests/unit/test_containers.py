"""The Dockerfile and compose file, checked offline (no Docker engine runs here).

What can be checked without an engine: the compose file parses, every service is built
from this repository or uses a Docker Official Image, every llmops command it runs exists
with those options, every ``LLMOPS_`` variable it sets is a real setting, and the
Dockerfile is multi-stage, installs the lock file and runs as a non-root user.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from llmops.cli import app
from llmops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = {"postgres", "redis"}  # Docker Official Images used by compose.yaml


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_services_are_built_here_or_official() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "prefect-server", "worker", "gateway"}
    for name, service in services.items():
        if "build" in service:
            assert service["build"] == "." and service["image"] == "llmops:latest", name
        else:
            repo = service["image"].split(":")[0]
            assert repo in OFFICIAL and "/" not in repo, f"{name}: {service['image']}"


def test_llmops_commands_in_compose_exist() -> None:
    runner = CliRunner()
    for name, service in _compose()["services"].items():
        if service.get("image") != "llmops:latest" or service.get("entrypoint"):
            continue
        result = runner.invoke(app, [*service["command"], "--help"])
        assert result.exit_code == 0, (
            f"{name}: llmops {' '.join(service['command'])}\n{result.output}"
        )


def test_llmops_environment_names_real_settings() -> None:
    known = {f"LLMOPS_{field.upper()}" for field in Settings.model_fields}
    for name, service in _compose()["services"].items():
        for var in service.get("environment", {}):
            if var.startswith("LLMOPS_"):
                assert var in known, f"{name}: {var} is not a setting"


def test_dependencies_are_services() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    mounted = services["postgres"]["volumes"][1].split(":")[0]
    assert (ROOT / mounted).is_file()


def test_dockerfile_is_multistage_locked_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "uv sync --locked --no-dev" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    for src in re.findall(r"^COPY (?:--chown=\S+ )?(?!--from)(\S+) ", text, re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".llmops", ".venv", ".git"} <= set(ignored)
