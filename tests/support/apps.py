"""Building test apps: one registry of test functions on a task hub of the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import durafka
from durafka.registry import Registry
from durafka.settings import Settings


def make_app(
    bootstrap: str, hub: str, state_dir: Path, registry: Registry, **overrides: Any
) -> durafka.App:
    """An App running ``registry``'s functions on task hub ``hub`` (4 partitions).

    Tests use a short ``transaction_timeout_ms`` so a killed producer's open
    transaction does not stall read_committed readers for long.
    """
    settings = Settings(
        task_hub=hub,
        bootstrap_servers=bootstrap,
        state_dir=state_dir,
        partitions=overrides.pop("partitions", 4),
        transaction_timeout_ms=overrides.pop("transaction_timeout_ms", 10_000),
        **overrides,
    )
    app = durafka.App(settings=settings)
    app.registry = registry
    return app
