"""Building test apps: one registry of test functions on a task hub of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import durafka
from durafka.hosting import Runner
from durafka.processor import Processor
from durafka.registry import Registry
from durafka.settings import Settings


def make_app(
    bootstrap: str, hub: str, state_dir: Path, registry: Registry, **overrides: Any
) -> durafka.App:
    """An App running ``registry``'s functions on task hub ``hub`` (4 partitions).

    Other settings are the defaults users get, e.g. the 10 s
    ``transaction_timeout_ms`` that bounds how long a killed producer's open
    transaction stalls read_committed readers.
    """
    settings = Settings(
        task_hub=hub,
        bootstrap_servers=bootstrap,
        state_dir=state_dir,
        partitions=overrides.pop("partitions", 4),
        **overrides,
    )
    app = durafka.App(settings=settings)
    app.registry = registry
    return app


@contextmanager
def hosted(app: durafka.App, partitions: list[int] | None = None) -> Iterator[Processor]:
    """``app.running()`` with the processor at hand (its counters, its partitions).

    A processor (of a static range when ``partitions`` is given) and a worker on
    threads, without activities next to the processor.
    """
    runner = Runner()
    processor = app.processor(partitions)
    runner.add("processor", processor.run)
    runner.add("worker", app.worker().run)
    runner.start()
    try:
        yield processor
    finally:
        runner.stop()
