"""Reading what a test's task hub sent to ``H.dead-letters``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from durafka.codec.records import decode_dead_letter
from durafka.topology import HubTopics
from durafka.transport import TopicPartition, Transport
from tests.support.waiting import wait_until


def read_dead_letters(
    transport: Transport,
    hub: str,
    until: Callable[[list[dict[str, Any]]], bool] = bool,
    *,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """The dead letters of ``hub`` (decoded, in offset order) once ``until(letters)`` holds."""
    topic = HubTopics(hub).dead_letters
    consumer = transport.consumer(None)
    n = transport.partition_count(topic)
    consumer.assign({TopicPartition(topic, p): None for p in range(n)})
    letters: list[dict[str, Any]] = []

    def probe() -> bool:
        for record in consumer.poll_batch(100, 0.2):
            value = record.value()
            if value is not None:  # None: a redrive receipt
                letters.append(decode_dead_letter(value))
        return until(letters)

    try:
        wait_until(probe, timeout=timeout, what=f"dead letters of {hub}")
    finally:
        consumer.close()
    return letters
