"""Small confluent-kafka helpers for tests against the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from durafka.topology import TopicSpec
from durafka.transport.admin import apply_topics


def admin_client(bootstrap: str) -> AdminClient:
    """An admin client for ``bootstrap``."""
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 1, **config: str) -> str:
    """Create topic ``name`` (idempotently) and return its name."""
    apply_topics(admin_client(bootstrap), [TopicSpec(name, partitions, 1, dict(config))])
    return name


def consume_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Message]], bool],
    *,
    isolation_level: str = "read_committed",
    timeout: float = 30.0,
    group_id: str | None = None,
    settle: float = 0.0,
) -> list[Message]:
    """Read ``topic`` from the beginning until ``done(records)`` or ``timeout``.

    Args:
        bootstrap: broker address.
        topic: topic to read (every partition, assigned by hand).
        done: called with all records so far; True stops reading.
        isolation_level: ``read_committed`` or ``read_uncommitted``, always explicit.
        timeout: give up after this many seconds and return what was read.
        group_id: consumer group; a throwaway one by default (nothing is committed).
        settle: keep reading this long after ``done`` to catch unexpected extras.

    Returns:
        Every record read, in arrival order.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id or f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation_level,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            for record in consumer.consume(100, timeout=0.2):
                if record.error() is None:
                    records.append(record)
            if settle_until is None and done(records):
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        return records
    finally:
        consumer.close()


def values(records: Sequence[Message]) -> list[str | None]:
    """The values of ``records`` decoded as UTF-8 (``None`` for a tombstone)."""
    return [None if (v := r.value()) is None else v.decode() for r in records]
