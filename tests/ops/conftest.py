"""Fixtures of the management, API and dashboard tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import durafka
from durafka.management import Management
from durafka.registry import Registry
from tests.ops import apps


@pytest.fixture
def app_registry() -> Registry:
    """This package's functions (used by ``app_factory`` and ``running_app``)."""
    return apps.app.registry


@pytest.fixture
def management(running_app: durafka.App) -> Iterator[Management]:
    """Management of the running app's task hub."""
    with Management.for_app(running_app) as m:
        yield m
