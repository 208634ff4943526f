"""Helpers of the worker tests: tasks in, results out, committed offsets.

Each test produces ``ActivityTask`` records to a fresh task hub, runs a worker in
a thread and reads what it committed to ``H.orchestrations`` (read_committed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from durafka.activities.worker import ActivityWorker
from durafka.codec.payload import encode_payload
from durafka.codec.records import ActivityTask, decode_message, encode_activity_task
from durafka.partitioning import partition_for
from durafka.runtime.history import HistoryEvent
from durafka.settings import Settings
from durafka.topology import HubTopics
from durafka.transport import TopicPartition, Transport
from tests.support.waiting import wait_until

ORCHESTRATION_PARTITIONS = 3
ACTIVITY_PARTITIONS = 2
DEAD_LETTER_PARTITIONS = 2


def make_settings(bootstrap: str, hub: str, **overrides: Any) -> Settings:
    return Settings(
        task_hub=hub,
        bootstrap_servers=bootstrap,
        transaction_timeout_ms=overrides.pop("transaction_timeout_ms", 10_000),
        **overrides,
    )


class Running:
    """A worker running in a thread; remembers what ``run`` raised."""

    def __init__(self, worker: ActivityWorker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 20.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"


def task(
    instance: str, name: str, value: Any = None, *, seq: int = 0, attempt: int = 1
) -> ActivityTask:
    data = None if value is None else encode_payload(value)
    return ActivityTask(instance, seq, attempt, name, data, 1_700_000_000_000)


def produce_tasks(transport: Transport, hub: str, tasks: Sequence[ActivityTask]) -> None:
    producer = transport.producer()
    topic = HubTopics(hub).activities
    for t in tasks:
        key = t.instance_id.encode()
        producer.produce(
            topic, partition_for(key, ACTIVITY_PARTITIONS), key, encode_activity_task(t)
        )
    assert producer.flush(10.0) == 0
    producer.close()


@dataclass
class Result:
    instance_id: str
    event: HistoryEvent
    partition: int
    key: bytes | None


def read_topic(
    transport: Transport,
    topic: str,
    partitions: int,
    done: Callable[[list[Any]], bool],
    timeout: float = 30.0,
) -> list[Any]:
    """Records of ``topic`` (read_committed, from the beginning) once ``done(records)``."""
    consumer = transport.consumer(None)
    consumer.assign({TopicPartition(topic, p): None for p in range(partitions)})
    records: list[Any] = []
    try:

        def probe() -> bool:
            records.extend(consumer.poll_batch(100, 0.1))
            return done(records)

        wait_until(probe, timeout=timeout, interval=0.0, what=f"records on {topic}")
    finally:
        consumer.close()
    return records


def read_results(transport: Transport, hub: str, count: int) -> dict[tuple[str, int, int], Result]:
    """The worker's results by (instance id, seq, attempt), once ``count`` distinct ones arrived.

    Duplicates (at-least-once) collapse into one entry.
    """
    results: dict[tuple[str, int, int], Result] = {}

    def done(records: list[Any]) -> bool:
        for r in records[len(seen) :]:
            instance_id, event = decode_message(r.value())
            results[(instance_id, event.seq, event.attempt)] = Result(
                instance_id, event, r.partition(), r.key()
            )
        seen[:] = records
        return len(results) >= count

    seen: list[Any] = []
    read_topic(transport, HubTopics(hub).orchestrations, ORCHESTRATION_PARTITIONS, done)
    return results


def read_events(
    transport: Transport, hub: str, done: Callable[[list[HistoryEvent]], bool]
) -> list[HistoryEvent]:
    """Every event the worker committed to ``H.orchestrations`` once ``done(events)``."""
    events: list[HistoryEvent] = []

    def probe(records: list[Any]) -> bool:
        events[:] = [decode_message(r.value())[1] for r in records]
        return done(events)

    read_topic(transport, HubTopics(hub).orchestrations, ORCHESTRATION_PARTITIONS, probe)
    return events


def committed_offset(transport: Transport, hub: str, instance: str) -> int | None:
    """The offset ``H.workers`` committed on the ``H.activities`` partition of ``instance``."""
    tp = TopicPartition(
        HubTopics(hub).activities, partition_for(instance.encode(), ACTIVITY_PARTITIONS)
    )
    probe = transport.consumer(f"{hub}.workers")
    try:
        return probe.committed([tp])[tp]
    finally:
        probe.close()


def assert_all_committed(transport: Transport, hub: str) -> None:
    """The group ``H.workers`` committed every partition of ``H.activities`` to its end."""
    topic = HubTopics(hub).activities
    consumer = transport.consumer(f"{hub}.workers")
    try:
        tps = [TopicPartition(topic, p) for p in range(ACTIVITY_PARTITIONS)]
        ends = {tp: consumer.watermarks(tp)[1] for tp in tps}

        def probe() -> bool:
            committed = consumer.committed(tps)
            return all((committed[tp] or 0) == ends[tp] for tp in tps)

        wait_until(probe, timeout=15.0, what=f"committed offsets {ends}")
    finally:
        consumer.close()
