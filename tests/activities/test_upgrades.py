"""Rolling upgrades seen from the worker: activities and schemas it does not know yet.

An older worker meets tasks of activities only the new version registers, and
records written with a newer schema. Neither may be lost: the task waits for a
worker that knows the activity (for a grace period), the newer record stops its
partition until an upgraded worker takes it.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from durafka.codec.avro import MARKER
from durafka.codec.payload import encode_payload
from durafka.codec.records import ActivityTask, encode_activity_task
from durafka.errors import UnknownFunctionError
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.topology import HubTopics
from durafka.transport import TopicPartition, Transport
from tests.activities.workers import (
    ACTIVITY_PARTITIONS,
    DEAD_LETTER_PARTITIONS,
    Running,
    assert_all_committed,
    committed_offset,
    produce_tasks,
    read_results,
    task,
)
from tests.support.metrics import gauge
from tests.support.waiting import wait_until


def _now_task(instance: str, name: str, value: object = None, *, seq: int = 0) -> ActivityTask:
    """A task scheduled now (grace periods count from the scheduling time)."""
    data = None if value is None else encode_payload(value)
    return ActivityTask(instance, seq, 1, name, data, time.time_ns() // 1_000_000)


def _registry(runs: Counter[str], *names: str) -> Registry:
    registry = Registry()
    lock = threading.Lock()

    def activity(name: str) -> Callable[[int], str]:
        def work(x: int) -> str:
            with lock:
                runs[name] += 1
            return f"{name}({x})"

        return work

    for name in names:
        registry.add_activity(activity(name), name=name)
    return registry


def test_a_task_of_an_unknown_activity_waits_for_a_worker_that_knows_it(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    # One instance, one partition: offset 0 is the new activity, 1 an old one.
    produce_tasks(transport, hub, [_now_task("u", "new", 1), _now_task("u", "old", 2, seq=1)])
    older = start_worker(_registry(runs, "old"), unknown_activity_grace_ms=60_000)

    assert read_results(transport, hub, 1)[("u", 1, 1)].event.payload == b'"old(2)"'
    threading.Event().wait(0.5)  # time to fail "new" at once, as before
    assert len(read_results(transport, hub, 1)) == 1  # it did not
    assert committed_offset(transport, hub, "u") in (None, 0)  # and its offset is kept
    # Waiting for a worker that knows the activity is not a stopped partition; the
    # gauge is exported anyway, so an alert can wait for it.
    assert gauge(older.worker.metrics, "durafka_partitions_stopped", role="worker") == 0
    older.join()  # the rolling upgrade replaces the older worker

    start_worker(_registry(runs, "old", "new"))
    new = read_results(transport, hub, 2)[("u", 0, 1)].event
    assert new.kind is EventKind.TASK_COMPLETED and new.payload == b'"new(1)"'
    assert runs == Counter({"old": 1, "new": 1})
    assert_all_committed(transport, hub)


def test_a_task_of_an_unknown_activity_fails_after_the_grace_period(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    produce_tasks(transport, hub, [_now_task("g", "missing", 1)])
    start_worker(_registry(Counter(), "known"), unknown_activity_grace_ms=300)

    event = read_results(transport, hub, 1)[("g", 0, 1)].event
    assert event.kind is EventKind.TASK_FAILED and event.failure is not None
    assert event.failure.is_caused_by(UnknownFunctionError)
    assert "'missing' within 0.3 s" in event.failure.message
    assert "unknown_activity_grace_ms" in event.failure.message
    assert "['known']" in event.failure.message
    assert_all_committed(transport, hub)


def _newer_schema_task() -> bytes:
    """An ActivityTask as a newer durafka might write it: our marker, a fingerprint we lack."""
    body = encode_activity_task(task("n", "work", 1))[10:]
    return MARKER + struct.pack("<Q", 0x0123456789ABCDEF) + body + b"\x02\x04new"


def test_a_task_of_a_newer_schema_stops_its_partition_and_loses_nothing(
    transport: Transport,
    hub: str,
    start_worker: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: Counter[str] = Counter()
    topics = HubTopics(hub)
    p = partition_for(b"n", ACTIVITY_PARTITIONS)
    other = next(f"o{i}" for i in range(100) if partition_for(f"o{i}".encode(), 2) != p)
    producer = transport.producer()
    producer.produce(topics.activities, p, b"n", _newer_schema_task())
    assert producer.flush(10.0) == 0
    producer.close()
    produce_tasks(transport, hub, [task("n", "work", 2, seq=1), task(other, "work", 3)])
    with caplog.at_level(logging.ERROR, logger="durafka.worker"):
        running = start_worker(_registry(runs, "work"))
        # The other partition goes on...
        assert read_results(transport, hub, 1)[(other, 0, 1)].event.payload == b'"work(3)"'
        wait_until(lambda: bool(running.worker.blocked_partitions), what="the blocked partition")
    # ...this one stops at the newer record: not dead-lettered, not skipped.
    assert running.worker.blocked_partitions == {TopicPartition(topics.activities, p)}
    # An operator sees it without reading the logs.
    assert gauge(running.worker.metrics, "durafka_partitions_stopped", role="worker") == 1
    threading.Event().wait(0.5)
    assert runs == Counter({"work": 1})
    assert committed_offset(transport, hub, "n") in (None, 0)
    assert any("Upgrade this worker" in r.getMessage() for r in caplog.records)
    assert _records(transport, topics.dead_letters, DEAD_LETTER_PARTITIONS, quiet=1.0) == []


def _records(transport: Transport, topic: str, partitions: int, *, quiet: float) -> list[object]:
    """What ``topic`` holds, read for ``quiet`` seconds."""
    consumer = transport.consumer(None)
    try:
        consumer.assign({TopicPartition(topic, p): None for p in range(partitions)})
        records: list[object] = []
        deadline = time.monotonic() + quiet
        while time.monotonic() < deadline:
            records.extend(consumer.poll_batch(100, 0.1))
        return records
    finally:
        consumer.close()
