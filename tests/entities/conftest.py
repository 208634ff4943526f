"""Fixtures of the entity tests: the entity app on memory:// and on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.settings import Settings
from tests.entities import apps


def make_app(bootstrap: str, hub: str, state_dir: Path, **overrides: Any) -> durafka.App:
    """An App with the entity test registry on its own task hub (4 partitions)."""
    settings = Settings(
        task_hub=hub,
        bootstrap_servers=bootstrap,
        state_dir=state_dir,
        partitions=overrides.pop("partitions", 4),
        transaction_timeout_ms=overrides.pop("transaction_timeout_ms", 10_000),
        **overrides,
    )
    app = durafka.App(settings=settings)
    app.registry = apps.app.registry
    return app


@pytest.fixture(params=["memory", "kafka"])
def bootstrap(request: pytest.FixtureRequest) -> str:
    """``memory://<unique>`` or the real broker's address."""
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex[:8]}"
    return str(request.getfixturevalue("kafka_bootstrap"))


@pytest.fixture
def app_factory(bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., durafka.App]]:
    """Builds apps on a fresh task hub (one per test)."""
    hub = f"e{uuid.uuid4().hex[:10]}"
    made: list[durafka.App] = []

    def factory(**overrides: Any) -> durafka.App:
        app = make_app(bootstrap, overrides.pop("hub", hub), tmp_path / "state", **overrides)
        made.append(app)
        return app

    yield factory
    for app in made:
        app.close()


@pytest.fixture
def running_app(app_factory: Callable[..., durafka.App]) -> Iterator[durafka.App]:
    """An app with a processor (and a worker) running in this process."""
    app = app_factory()
    with app.running():
        yield app
