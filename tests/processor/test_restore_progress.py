"""Restore never blocks the group (issue 10, hole 7).

A partition's restore runs a slice per loop iteration, between the polls of the
group consumer: the member keeps polling (on Kafka, ``max.poll.interval.ms`` is
never exceeded, so it is not dropped from the group) and the partitions that are
ready keep being processed. Before the fix every assigned partition was restored
to the end inside one iteration, without polling.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from durafka import OrchestrationContext
from durafka.client import Client
from durafka.processor import Processor
from durafka.registry import Registry
from durafka.settings import Settings
from durafka.state.base import PartitionStore, StoreFactory
from durafka.state.memory import MemoryStoreFactory
from durafka.state.rocksdb import RocksDBStoreFactory
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics, load_hub_spec
from durafka.transport import Transport, open_transport
from tests.support.foreign import ids_on
from tests.support.waiting import run_until, wait_until

registry = Registry()


async def hello(ctx: OrchestrationContext, name: str) -> str:
    """Completes at once."""
    return f"hello {name}"


registry.add_orchestration(hello)


class SlowStore:
    """A store whose writes take ``per_key`` seconds per key: a slow disk, a big restore."""

    def __init__(self, inner: PartitionStore, per_key: float) -> None:
        self._inner = inner
        self._per_key = per_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        *,
        checkpoint_time: float | None = None,
    ) -> None:
        time.sleep(self._per_key * len(changes))
        self._inner.write(changes, changelog_offset, checkpoint_time=checkpoint_time)


class SlowStores:
    """Opens the store of ``slow`` partition as a :class:`SlowStore`, the others as they are."""

    def __init__(self, inner: StoreFactory, slow: int, per_key: float) -> None:
        self._inner = inner
        self._slow = slow
        self._per_key = per_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def open(self, hub: str, partition: int) -> PartitionStore:
        store = self._inner.open(hub, partition)
        if partition != self._slow:
            return store
        return SlowStore(store, self._per_key)  # type: ignore[return-value]


def fill_changelog(transport: Transport, hub: str, partition: int, n: int) -> None:
    """``n`` changelog records on ``partition`` (keys nothing reads), as a long history."""
    producer = transport.producer()
    topic = HubTopics(hub).changelog
    for i in range(n):
        producer.produce(topic, partition, b"x/%06d" % i, b"v")
    assert producer.flush(30) == 0
    producer.close()


@pytest.fixture
def memory_hub() -> Iterator[tuple[Settings, Transport]]:
    """A two-partition hub on memory://, restoring 100 changelog records per iteration."""
    hub = f"t{uuid.uuid4().hex[:10]}"
    transport = open_transport(f"memory://{uuid.uuid4().hex[:8]}")
    transport.ensure_topics(load_hub_spec(hub, partitions=2))
    settings = Settings(
        task_hub=hub,
        bootstrap_servers=transport.bootstrap,
        partitions=2,
        restore_records_per_iteration=100,
    )
    yield settings, transport
    transport.close()


def test_ready_partitions_are_processed_while_another_one_restores(
    memory_hub: tuple[Settings, Transport],
) -> None:
    settings, transport = memory_hub
    hub = settings.task_hub
    fill_changelog(transport, hub, 1, 3000)
    proc = Processor(
        settings, registry, transport, SlowStores(MemoryStoreFactory(), 1, per_key=0.0005)
    )
    client = Client(settings, registry, transport)
    quick = ids_on(0, 2, "quick", 1)[0]
    client.start_new(hello, "x", instance_id=quick)

    def completed() -> bool:
        status = client.get_status(quick)
        return status is not None and status.runtime_status is RuntimeStatus.COMPLETED

    run_until(proc, completed, "the instance on partition 0 completed")
    # Partition 0 was served while partition 1 was still restoring, paused.
    assert proc.owned_partitions == [0]
    assert proc.restoring_partitions == [1]
    run_until(proc, lambda: proc.owned_partitions == [0, 1], "partition 1 restored")
    store = proc._owned[1].store
    assert sum(1 for _ in store.iter_prefix(b"x/")) == 3000
    proc.close()
    client.close()


def test_a_partition_revoked_while_restoring_stops_cleanly_and_resumes_later(
    memory_hub: tuple[Settings, Transport],
) -> None:
    settings, transport = memory_hub
    hub = settings.task_hub
    fill_changelog(transport, hub, 1, 1000)
    stores = MemoryStoreFactory()
    first = Processor(settings, registry, transport, stores)
    run_until(first, lambda: first.owned_partitions == [0], "partition 0 ready")
    for _ in range(3):
        first.run_once(poll_timeout=0.0)
    assert first.restoring_partitions == [1]
    # A second member joins: the first gives a partition away (memory's round robin
    # moves partition 1), in the middle of its restore.
    second = Processor(settings, registry, transport, MemoryStoreFactory())
    second.start()
    run_until(first, lambda: first.restoring_partitions == [], "partition 1 revoked")
    assert first.owned_partitions == [0]
    # Its store was closed with what a whole number of slices brought, checkpointed.
    store = stores.open(hub, 1)
    restored = sum(1 for _ in store.iter_prefix(b"x/"))
    checkpoint = store.changelog_offset()
    assert checkpoint is not None and 0 < restored == checkpoint < 1000
    assert restored % 100 == 0
    store.close()
    # The second member leaves; the first gets partition 1 back and restores the rest.
    second.close()
    run_until(first, lambda: first.owned_partitions == [0, 1], "partition 1 back")
    assert sum(1 for _ in first._owned[1].store.iter_prefix(b"x/")) == 1000
    first.close()


@pytest.mark.kafka
def test_a_slow_restore_keeps_the_group_member_on_kafka(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Restoring takes longer than ``max.poll.interval.ms``: the member stays in the group."""
    hub = f"t{uuid.uuid4().hex[:10]}"
    transport = open_transport(kafka_bootstrap)
    transport.ensure_topics(load_hub_spec(hub, partitions=1))
    fill_changelog(transport, hub, 0, 2000)
    settings = Settings(
        task_hub=hub,
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        restore_records_per_iteration=50,
        client_config={
            "consumer.max.poll.interval.ms": "6000",
            "consumer.session.timeout.ms": "6000",
        },
    )
    # 2000 records at 5 ms each: a 10 s restore, well past max.poll.interval.ms.
    stores = SlowStores(RocksDBStoreFactory(tmp_path / "state"), 0, per_key=0.005)
    proc = Processor(settings, registry, transport, stores)
    stop = threading.Event()
    thread = threading.Thread(target=proc.run, args=(stop,), daemon=True)
    thread.start()
    group = HubTopics(hub).processor_group
    members: list[frozenset[str]] = []
    try:
        members.append(
            wait_until(
                lambda: frozenset(transport.group_assignments(group)), what="the member joined"
            )
        )
        deadline = time.monotonic() + 120
        while proc.owned_partitions != [0]:
            assert time.monotonic() < deadline, "the restore did not finish"
            members.append(frozenset(transport.group_assignments(group)))
            time.sleep(0.5)
        client = Client(settings, registry, transport)
        client.start_new(hello, "x", instance_id="after")
        assert client.wait_for_completion("after", timeout=60) == "hello x"
        client.close()
        members.append(frozenset(transport.group_assignments(group)))
    finally:
        stop.set()
        thread.join(30)
        transport.close()
    # One member all along: never dropped for not polling, never rejoined.
    assert set(members) == {members[0]}, f"group members over time: {members}"
