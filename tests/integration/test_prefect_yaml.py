"""prefect.yaml names real flows, with parameters those flows accept."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS: list[dict[str, Any]] = yaml.safe_load((REPO / "prefect.yaml").read_text())[
    "deployments"
]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_deployment_entrypoint_and_parameters(deployment: dict[str, Any]) -> None:
    from prefect import Flow

    path, _, name = deployment["entrypoint"].partition(":")
    assert (REPO / path).is_file()
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    accepted = inspect.signature(flow.fn).parameters
    assert set(deployment.get("parameters", {})) <= set(accepted)
    for schedule in deployment.get("schedules", []):
        assert schedule["timezone"] == "UTC"
    assert deployment["work_pool"]["name"] == "llmops"
