"""Fixtures for the static checks of the deployment (Dockerfile, compose, Prometheus, Grafana).

None of these tests needs a Docker engine or the network; the Prometheus ones need `promtool`
(Debian package `prometheus`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary; a missing one fails the test unless TASKSVC_ALLOW_NO_PROMTOOL=1."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    if os.environ.get("TASKSVC_ALLOW_NO_PROMTOOL") == "1":
        pytest.skip("promtool is not on PATH and TASKSVC_ALLOW_NO_PROMTOOL=1")
    pytest.fail(
        "promtool is not on PATH: install it (Debian: `apt-get install --no-install-recommends prometheus`) "
        "or set TASKSVC_ALLOW_NO_PROMTOOL=1 to skip the Prometheus checks",
        pytrace=False,
    )

