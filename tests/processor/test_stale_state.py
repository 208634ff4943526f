"""Stale local stores (issue 10, hole 6): a store of a partition that comes back
after the changelog's tombstones were compacted away must not resurrect what they
deleted (a purged instance, a deleted entity, a fired timer).

Processors are driven by hand (``run_once``). Processor ``a`` fills the partition's
store and stops; another machine (``b``, its own stores) deletes things; the
changelog is compacted until the tombstones are gone; then ``a`` owns the partition
again with its old store. Before the fix ``a`` restored from its old checkpoint,
never saw the tombstones, and the deleted keys were back in its store.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from durafka import Entity, EntityId, OrchestrationContext
from durafka.client import Client
from durafka.codec.records import decode_entity, encode_entity
from durafka.errors import TransportError
from durafka.processor import Processor
from durafka.processor.orchestrations import PURGE_SEQ
from durafka.registry import Registry
from durafka.settings import Settings
from durafka.state.base import PartitionStore, StoreFactory
from durafka.state.keys import (
    INPUT_OFFSET_KEY,
    TIMER_PREFIX,
    encode_input_offset,
    entity_key,
    instance_key,
    parse_timer_key,
)
from durafka.state.memory import MemoryStoreFactory
from durafka.state.rocksdb import RocksDBStoreFactory
from durafka.topology import HubTopics, TopicSpec, load_hub_spec
from durafka.transport import TopicPartition, Transport, open_transport
from durafka.transport.memory import MemoryTransport
from tests.support.foreign import ids_on
from tests.support.waiting import run_until, wait_until

registry = Registry()


async def hello(ctx: OrchestrationContext, name: str) -> str:
    """Completes at once."""
    return f"hello {name}"


async def napper(ctx: OrchestrationContext, seconds: int) -> str:
    """Sleeps on a durable timer, then completes."""
    await ctx.sleep(timedelta(seconds=seconds))
    return "woke"


class Counter(Entity[int]):
    """A counter."""

    def add(self, amount: int) -> None:
        self.state += amount


registry.add_orchestration(hello)
registry.add_orchestration(napper)
registry.add_entity(Counter)

COUNTER = EntityId("Counter", "c")
#: The changelog's tombstone retention on the test hubs (short, so the test can outlive it).
RETENTION_MS = 1000


class FakeClock:
    """The processors' clock, moved by hand (timers fire when it passes them)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def short_retention_specs(hub: str, *, kafka: bool) -> list[TopicSpec]:
    """The hub on one partition, its changelog keeping tombstones only ``RETENTION_MS``."""
    specs = []
    for spec in load_hub_spec(hub, partitions=1):
        if spec.name == HubTopics(hub).changelog:
            config = {**spec.config, "delete.retention.ms": str(RETENTION_MS)}
            if kafka:
                # Small segments that roll at once and a cleaner that takes any dirt, so
                # that the broker compacts the tombstones away within the test.
                config |= {
                    "segment.ms": "100",
                    "min.cleanable.dirty.ratio": "0.01",
                    "min.compaction.lag.ms": "0",
                }
            spec = TopicSpec(spec.name, spec.partitions, spec.replication_factor, config)
        specs.append(spec)
    return specs


@dataclass
class Hub:
    """A task hub on one partition and what the test needs to drive its processors."""

    settings: Settings
    transport: Transport
    clock: FakeClock
    compact: Callable[[], None]

    @property
    def topics(self) -> HubTopics:
        return HubTopics(self.settings.task_hub)

    def processor(
        self, stores: StoreFactory, clock: Callable[[], float] | None = None
    ) -> Processor:
        return Processor(self.settings, registry, self.transport, stores, clock=clock or self.clock)

    def client(self) -> Client:
        return Client(self.settings, registry, self.transport)


def changelog_keys(hub: Hub) -> dict[bytes, bytes | None]:
    """The changelog partition as a reader from the beginning sees it (latest per key)."""
    consumer = hub.transport.consumer(None)
    tp = TopicPartition(hub.topics.changelog, 0)
    try:
        high = consumer.watermarks(tp)[1]
        consumer.assign({tp: None})
        seen: dict[bytes, bytes | None] = {}
        while consumer.position(tp) < high:
            for r in consumer.poll_batch(10_000, 0.2):
                key = r.key()
                assert key is not None
                seen[key] = r.value()
        return seen
    finally:
        consumer.close()


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def hub(request: pytest.FixtureRequest) -> Iterator[Hub]:
    name = f"t{uuid.uuid4().hex[:10]}"
    kafka = request.param == "kafka"
    bootstrap = (
        str(request.getfixturevalue("kafka_bootstrap"))
        if kafka
        else f"memory://{uuid.uuid4().hex[:8]}"
    )
    transport = open_transport(bootstrap)
    transport.ensure_topics(short_retention_specs(name, kafka=kafka))
    settings = Settings(task_hub=name, bootstrap_servers=bootstrap, partitions=1)
    changelog = HubTopics(name).changelog

    filler = transport.producer()

    def compact() -> None:
        if isinstance(transport, MemoryTransport):
            # A tombstone survives the first compaction that sees it (readers get a
            # chance to read it) and goes at the next one, past its retention.
            transport.broker.compact(changelog)
            transport.broker.compact(changelog)
            return
        # Kafka's cleaner never touches the active segment, and works on dirty logs only:
        # keep writing (a key nothing reads) so that segments roll and the log stays dirty.
        filler.produce(changelog, 0, b"x/filler", b"%d" % time.monotonic_ns())
        filler.flush(10)

    yield Hub(settings, transport, FakeClock(), compact)
    filler.close()
    transport.close()


def stores_of(hub: Hub, root: Path) -> StoreFactory:
    """One machine's state: RocksDB on the real broker, memory stores on memory://."""
    if isinstance(hub.transport, MemoryTransport):
        return MemoryStoreFactory()
    return RocksDBStoreFactory(root)


def store_keys(stores: StoreFactory, hub: Hub) -> set[bytes]:
    store: PartitionStore = stores.open(hub.settings.task_hub, 0)
    try:
        return {key for key, _ in store.iter_prefix(b"")}
    finally:
        store.close()


def sleep_timers(keys: set[bytes]) -> list[bytes]:
    """The keys of the durable timer of instance ``sleeping`` (not a purge timer)."""
    return [
        key
        for key in keys
        if key.startswith(TIMER_PREFIX)
        and parse_timer_key(key)[1] == "sleeping"
        and parse_timer_key(key)[2] != PURGE_SEQ
    ]


def test_a_store_that_comes_back_after_tombstones_were_compacted_resurrects_nothing(
    hub: Hub, tmp_path: Path
) -> None:
    client = hub.client()
    a_stores = stores_of(hub, tmp_path / "a")
    started = hub.clock.now

    # a: a finished instance, an entity, a pending timer, all in a's store.
    a = hub.processor(a_stores)
    a.start()
    client.start_new(hello, "x", instance_id="done")
    client.start_new(napper, 60, instance_id="sleeping")
    client.signal_entity(COUNTER, "add", 5)
    run_until(
        a,
        lambda: (
            client.get_status("done") is not None
            and client.get_entity(COUNTER) is not None
            and a.next_timer_ms() is not None
        ),
        "instances started, entity written",
    )
    a.close()
    kept = store_keys(a_stores, hub)
    assert {instance_key("done"), entity_key(str(COUNTER))} <= kept
    assert sleep_timers(kept)

    # b, another machine: the timer fires, the instance is purged, the entity deleted.
    b = hub.processor(stores_of(hub, tmp_path / "b"))
    b.start()
    hub.clock.now += 61
    client.purge("done")
    client.delete_entity(COUNTER)
    run_until(
        b,
        lambda: (
            client.get_status("done") is None
            and client.get_entity(COUNTER) is None
            and (st := client.get_status("sleeping")) is not None
            and st.is_terminal
        ),
        "purged, deleted, timer fired",
    )
    b.close()
    tombstoned = [instance_key("done"), entity_key(str(COUNTER))]
    assert all(changelog_keys(hub)[key] is None for key in tombstoned)

    # The changelog keeps tombstones only so long: past that, compaction drops them.
    time.sleep(RETENTION_MS / 1000 + 0.2)

    def tombstones_gone() -> bool:
        hub.compact()
        return not any(key in changelog_keys(hub) for key in tombstoned)

    wait_until(
        tombstones_gone,
        timeout=180,
        interval=1,
        what="compaction to remove the tombstones",
    )

    # a owns the partition again, with its old store (and a clock from before the timer's
    # due time, so that a timer that came back would still be in the store).
    a2 = hub.processor(a_stores, clock=lambda: started)
    a2.start()
    run_until(a2, lambda: a2.owned_partitions == [0], "partition 0 restored")
    a2.close()
    back = store_keys(a_stores, hub)
    assert instance_key("done") not in back, "a purged instance came back"
    assert entity_key(str(COUNTER)) not in back, "a deleted entity came back"
    assert not sleep_timers(back), "a fired timer came back"
    client.close()


# -- the lifecycle of a partition's store on this process ----------------------------------


@pytest.fixture
def two_partitions() -> Iterator[tuple[Settings, Transport]]:
    hub = f"t{uuid.uuid4().hex[:10]}"
    transport = open_transport(f"memory://{uuid.uuid4().hex[:8]}")
    transport.ensure_topics(load_hub_spec(hub, partitions=2))
    yield Settings(task_hub=hub, bootstrap_servers=transport.bootstrap, partitions=2), transport
    transport.close()


def test_the_state_of_a_partition_given_away_is_deleted_after_the_delay(
    two_partitions: tuple[Settings, Transport], tmp_path: Path
) -> None:
    settings, transport = two_partitions
    settings = settings.model_copy(update={"state_cleanup_delay_ms": 0})
    stores = RocksDBStoreFactory(tmp_path / "first")
    first = Processor(settings, registry, transport, stores)
    run_until(first, lambda: first.owned_partitions == [0, 1], "both partitions ready")
    assert sorted(stores.stored_partitions(settings.task_hub)) == [0, 1]
    # A second member takes partition 1; the first no longer needs its state.
    second = Processor(settings, registry, transport, RocksDBStoreFactory(tmp_path / "second"))
    second.start()
    run_until(
        first,
        lambda: sorted(stores.stored_partitions(settings.task_hub)) == [0],
        "the state of partition 1 deleted",
    )
    assert first.owned_partitions == [0]
    assert not stores.path_for(settings.task_hub, 1).exists()
    first.close()
    second.close()


def test_a_revoked_idle_partition_keeps_a_checkpoint_as_recent_as_the_last_commit(
    two_partitions: tuple[Settings, Transport],
) -> None:
    """A group-mode commit proves the member owned all its partitions then: an idle
    partition given away is dated by it, not by the time it was last written (else it
    would be wiped on its return a day later)."""
    settings, transport = two_partitions
    stores = MemoryStoreFactory()
    first = Processor(settings, registry, transport, stores)
    run_until(first, lambda: first.owned_partitions == [0, 1], "both partitions ready")
    hub = settings.task_hub
    restored_at = first._owned[1].store.checkpoint_time()
    assert restored_at is not None
    time.sleep(0.05)
    before_commit = time.time()
    client = Client(settings, registry, transport)
    on_0 = ids_on(0, 2, "busy", 1)[0]
    client.start_new(hello, "x", instance_id=on_0)
    run_until(first, lambda: client.get_status(on_0) is not None, "a commit on partition 0")
    second = Processor(settings, registry, transport, MemoryStoreFactory())
    second.start()
    run_until(first, lambda: first.owned_partitions == [0], "partition 1 given away")
    store = stores.open(hub, 1)
    try:
        taken = store.checkpoint_time()
        assert taken is not None and taken >= before_commit > restored_at
    finally:
        store.close()
    first.close()
    second.close()
    client.close()


# -- a changelog behind the committed offset ------------------------------------------------


# Kafka only: on memory:// a commit is visible on every partition at once, so processors
# there do not write the offset (it cost ~8% of memory:// W1) and nothing can lag.
@pytest.mark.kafka
@pytest.mark.parametrize("hub", ["kafka"], indirect=True)
def test_a_new_owner_restores_until_the_changelog_has_the_commit_it_starts_after(
    hub: Hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The chaos soak (seed 312794) lost counter updates and entity locks: after a broker
    restart a new owner restored the changelog up to its last stable offset, then read
    the committed input offset, which the previous owner's last transaction had moved:
    ``commit_transaction`` returns once the coordinator decided, and the markers that
    make the records readable follow partition by partition, so the offsets were
    readable and the changelog records not yet. The state of the commit before was
    processed on from the offset after it. Each transaction now writes its input offset
    to the changelog (``o/``), and a restore goes on until it has read that offset.
    """
    caplog.set_level(logging.WARNING, logger="durafka.processor")
    client = hub.client()
    topics = hub.topics
    a = hub.processor(stores_of(hub, tmp_path / "a"))
    a.start()
    for _ in range(3):
        client.signal_entity(COUNTER, "add", 1)
    run_until(a, lambda: counter(client) == 3, "three signals applied")
    a.close()

    # The previous owner's last transaction as a new owner may find it: two more signals
    # processed, the offset after them committed and readable, its changelog records not.
    for _ in range(2):
        client.signal_entity(COUNTER, "add", 1)
    source = TopicPartition(topics.orchestrations, 0)
    reader = hub.transport.consumer(topics.processor_group)
    end = reader.watermarks(source)[1]
    previous = hub.transport.transactional_producer(f"{topics.hub}.processor.previous")
    previous.init_transactions()
    previous.begin_transaction()
    previous.send_offsets({source: end}, reader.group_metadata())
    previous.commit_transaction()

    b = hub.processor(stores_of(hub, tmp_path / "b"))
    b.start()
    run_until(
        b,
        lambda: any("restoring on" in r.getMessage() for r in caplog.records),
        "the new owner to find the changelog behind",
    )
    assert b.owned_partitions == []

    # The markers come: the counter as that transaction left it, and its offset.
    stored = changelog_keys(hub)[entity_key(str(COUNTER))]
    assert stored is not None
    record = decode_entity(stored)
    record.state = b"5"
    previous.begin_transaction()
    previous.produce(topics.changelog, 0, entity_key(str(COUNTER)), encode_entity(record))
    previous.produce(topics.changelog, 0, INPUT_OFFSET_KEY, encode_input_offset(end))
    previous.commit_transaction()
    run_until(b, lambda: b.owned_partitions == [0], "partition 0 ready")
    client.signal_entity(COUNTER, "add", 1)
    run_until(b, lambda: counter(client) == 6, "the next signal, on the whole state")
    b.close()
    previous.close()
    reader.close()
    client.close()


def counter(client: Client) -> int | None:
    """The counter's value as the entities view shows it."""
    found = client.get_entity(COUNTER)
    return None if found is None else int(found.state)


def test_a_committed_offset_that_cannot_be_read_yet_is_asked_again(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The chaos soak (seed 506097): right after a broker restart the request for a
    restored partition's committed offset timed out, and the processor stopped with the
    error (exit 1) instead of asking again."""
    caplog.set_level(logging.WARNING, logger="durafka.processor")
    client = hub.client()
    proc = hub.processor(stores_of(hub, tmp_path / "p"))
    consumer = proc._consumer
    committed = consumer.committed
    failures = [TransportError("committed offsets unavailable: Local: Timed out [_TIMED_OUT]")]

    def once_unavailable(partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        # Only the processor's own question (the Kafka transport asks too, on assignment).
        if failures and sys._getframe(1).f_code.co_name == "_ready":
            raise failures.pop()
        return committed(partitions)

    monkeypatch.setattr(consumer, "committed", once_unavailable)
    proc.start()
    client.signal_entity(COUNTER, "add", 2)
    run_until(proc, lambda: counter(client) == 2, "the signal applied")
    assert not failures
    assert "restoring on and asking again" in caplog.text
    proc.close()
    client.close()
