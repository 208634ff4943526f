"""Fixtures of the worker tests: a task hub's worker topics, workers running in threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from durafka.activities.worker import ActivityWorker
from durafka.registry import Registry
from durafka.topology import HubTopics, TopicSpec
from durafka.transport import Transport, open_transport
from tests.activities.workers import (
    ACTIVITY_PARTITIONS,
    DEAD_LETTER_PARTITIONS,
    ORCHESTRATION_PARTITIONS,
    Running,
    make_settings,
)


@pytest.fixture
def transport(bootstrap: str, hub: str) -> Iterator[Transport]:
    """A transport with the worker's topics of ``hub`` created."""
    t = open_transport(bootstrap)
    topics = HubTopics(hub)
    t.ensure_topics(
        [
            TopicSpec(topics.orchestrations, ORCHESTRATION_PARTITIONS),
            TopicSpec(topics.activities, ACTIVITY_PARTITIONS),
            TopicSpec(topics.dead_letters, DEAD_LETTER_PARTITIONS),
        ]
    )
    yield t
    t.close()


@pytest.fixture
def start_worker(
    bootstrap: str, hub: str, transport: Transport
) -> Iterator[Callable[..., Running]]:
    """Starts workers on ``hub``; stops every one at the end of the test."""
    started: list[Running] = []

    def start(
        registry: Registry,
        *,
        via: Transport | None = None,
        worker_id: str | None = None,
        exclusive_id: bool | None = None,
        drain_timeout: timedelta = timedelta(seconds=5),
        after_unclean_exit: bool = False,
        **settings: Any,
    ) -> Running:
        worker = ActivityWorker(
            make_settings(bootstrap, hub, **settings),
            registry,
            via or transport,
            worker_id=worker_id,
            exclusive_id=exclusive_id,
            drain_timeout=drain_timeout,
            after_unclean_exit=after_unclean_exit,
        )
        running = Running(worker)
        started.append(running)
        return running

    yield start
    for running in started:
        running.join()
