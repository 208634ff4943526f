"""Fixtures of the observability tests."""

from __future__ import annotations

import pytest

from durafka.registry import Registry
from tests.observability import apps


@pytest.fixture
def app_registry() -> Registry:
    """This package's test functions (used by ``app_factory``)."""
    return apps.app.registry
