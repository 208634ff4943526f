"""Fixtures of the feature tests: the feature app on memory:// and on the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.client import Client
from durafka.registry import Registry
from tests.features import apps
from tests.support import apps as support


def make_app(bootstrap: str, hub: str, state_dir: Path, **overrides: Any) -> durafka.App:
    """An App running this package's test functions on task hub ``hub``."""
    registry = overrides.pop("registry", apps.app.registry)
    return support.make_app(bootstrap, hub, state_dir, registry, **overrides)


@pytest.fixture
def app_registry() -> Registry:
    """This package's test functions (used by ``app_factory`` and ``running_app``)."""
    return apps.app.registry


@pytest.fixture
def client(running_app: durafka.App) -> Iterator[Client]:
    """A sync client of ``running_app``."""
    with running_app.sync_client() as c:
        yield c


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory for the run counters of activities."""
    path = tmp_path / "runs"
    path.mkdir()
    return path
