"""Changelog restore: scripted-consumer unit tests, then memory:// and real-broker runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from durafka.errors import StoreError, WaitTimeoutError
from durafka.state.base import PartitionStore
from durafka.state.memory import MemoryStore
from durafka.state.restore import (
    Restored,
    Restorer,
    TombstoneRetention,
    restore_partition,
    stale_reason,
    trusted_checkpoint_age,
)
from durafka.state.rocksdb import RocksDBStore
from durafka.topology import TopicSpec
from durafka.transport import Transport, open_transport
from durafka.transport.base import Consumer, TopicPartition

TP = TopicPartition("hub.state-changelog", 3)


class SpyStore(MemoryStore):
    """Records every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[dict[bytes, bytes | None], int | None]] = []

    def write(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        *,
        checkpoint_time: float | None = None,
    ) -> None:
        self.writes.append((dict(changes), changelog_offset))
        super().write(changes, changelog_offset, checkpoint_time=checkpoint_time)


def state(store: MemoryStore) -> dict[bytes, bytes]:
    return dict(store.iter_prefix(b""))


# --- a scripted consumer: a partition log with aborted records and markers ----------


@dataclass(frozen=True)
class _Rec:
    _offset: int
    _key: bytes | None
    _value: bytes | None

    def topic(self) -> str:
        return TP.topic

    def partition(self) -> int:
        return TP.partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)

    def error(self) -> Any:
        return None


class ScriptedConsumer:
    """A read_committed view of one partition log, like librdkafka's.

    Each log entry is ``(key, value)`` (committed), ``"aborted"`` or ``"marker"``;
    the latter two take an offset but are never returned, and the position moves
    past them.
    """

    def __init__(self, log: list[tuple[bytes | None, bytes | None] | str], low: int = 0):
        self.log = log
        self.low = low
        self.assigned: dict[TopicPartition, int] = {}
        self.polls = 0
        self.first_offsets: list[int] = []

    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        assert partition == TP
        return self.low, self.low + len(self.log)

    def assign(self, offsets: Mapping[TopicPartition, int | None]) -> None:
        assert not self.assigned, "restore must use a consumer with nothing assigned"
        self.assigned = {tp: self.low if o is None else o for tp, o in offsets.items()}

    def unassign(self) -> None:
        self.assigned = {}

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def position(self, partition: TopicPartition) -> int:
        return self.assigned[partition]

    def poll_batch(self, max_records: int, timeout: float) -> list[_Rec]:
        self.polls += 1
        pos = self.assigned[TP]
        out: list[_Rec] = []
        end = self.low + len(self.log)
        while pos < end and len(out) < max_records:
            entry = self.log[pos - self.low]
            if not isinstance(entry, str):
                out.append(_Rec(pos, entry[0], entry[1]))
            pos += 1
        if out:
            self.first_offsets.append(out[0].offset())
        self.assigned[TP] = pos
        return out


def scripted(log: list[Any], low: int = 0) -> tuple[ScriptedConsumer, Consumer]:
    c = ScriptedConsumer(log, low)
    return c, cast(Consumer, c)


LOG: list[Any] = [
    (b"a", b"1"),
    (b"b", b"1"),
    "marker",  # commit
    "aborted",  # aborted records never come back
    "aborted",
    "marker",  # abort
    (b"b", b"2"),
    (b"a", None),  # tombstone
    (b"c", b"1"),
    "marker",  # commit
    "aborted",
    "marker",  # a trailing aborted transaction: nothing to read up to the end
]


def test_restores_committed_state_into_empty_store() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    progress: list[tuple[int, int]] = []
    applied = restore_partition(
        store, consumer, TP, progress=lambda done, total: progress.append((done, total))
    )
    assert applied == 5
    assert state(store) == {b"b": b"2", b"c": b"1"}
    # One write for the whole batch, checkpointed past the trailing markers.
    assert store.writes == [({b"a": None, b"b": b"2", b"c": b"1"}, 12)]
    assert store.changelog_offset() == 12
    assert spy.assigned == {}
    assert progress[-1] == (12, 12)


def test_one_store_write_per_poll_batch() -> None:
    _, consumer = scripted(LOG)
    store = SpyStore()
    assert restore_partition(store, consumer, TP, max_records=2) == 5
    assert [offset for _, offset in store.writes] == [2, 8, 12]
    assert [len(changes) for changes, _ in store.writes] == [2, 2, 1]
    assert state(store) == {b"b": b"2", b"c": b"1"}


def test_tail_of_markers_only_moves_the_checkpoint() -> None:
    _, consumer = scripted([(b"a", b"1"), "marker", "aborted", "aborted", "marker"])
    store = SpyStore()
    restore_partition(store, consumer, TP, max_records=1)
    # The first poll returns the record, the next ones only advance the position.
    assert store.writes == [({b"a": b"1"}, 1), ({}, 5)]


def test_resumes_from_the_checkpoint() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    store.write({b"a": b"local"}, 6)
    store.writes.clear()
    assert restore_partition(store, consumer, TP) == 3
    assert spy.first_offsets == [6]  # the head was never read
    assert state(store) == {b"b": b"2", b"c": b"1"}


def test_up_to_date_store_reads_nothing() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    store.write({b"b": b"2"}, 12)
    assert restore_partition(store, consumer, TP) == 0
    assert spy.polls == 0
    assert store.changelog_offset() == 12


def test_empty_changelog() -> None:
    spy, consumer = scripted([])
    store = SpyStore()
    assert restore_partition(store, consumer, TP) == 0
    # Nothing read; the checkpoint (with its time) says the store is up to date.
    assert spy.polls == 0 and store.writes == [({}, 0)]


def test_checkpoint_beyond_high_watermark_is_an_error() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    store.write({}, 40)
    with pytest.raises(StoreError, match=r"offset 40.*high watermark 12.*delete") as info:
        restore_partition(store, consumer, TP)
    assert str(TP) in str(info.value)
    assert spy.polls == 0 and spy.assigned == {}


def test_checkpoint_below_low_watermark_starts_at_low() -> None:
    spy, consumer = scripted([(b"a", b"1"), "marker"], low=100)
    store = SpyStore()
    store.write({}, 50)
    assert restore_partition(store, consumer, TP) == 1
    assert spy.first_offsets == [100]
    assert store.changelog_offset() == 102


def test_deadline_stops_restore_and_leaves_a_resumable_checkpoint() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    with pytest.raises(WaitTimeoutError, match=r"at offset 2 of 12"):
        restore_partition(store, consumer, TP, max_records=2, deadline=time.monotonic() - 1)
    assert store.changelog_offset() == 2
    assert spy.assigned == {}
    assert restore_partition(store, consumer, TP, max_records=2) == 3
    assert state(store) == {b"b": b"2", b"c": b"1"}


def test_store_failure_unassigns_and_propagates() -> None:
    class Broken(MemoryStore):
        def write(
            self,
            changes: Mapping[bytes, bytes | None],
            offset: int | None,
            *,
            checkpoint_time: float | None = None,
        ) -> None:
            raise StoreError("disk full")

    spy, consumer = scripted(LOG)
    with pytest.raises(StoreError, match="disk full"):
        restore_partition(Broken(), consumer, TP)
    assert spy.assigned == {}


def test_keyless_record_is_skipped() -> None:
    _, consumer = scripted([(None, b"junk"), (b"a", b"1"), "marker"])
    store = SpyStore()
    assert restore_partition(store, consumer, TP) == 1
    assert state(store) == {b"a": b"1"}
    assert store.changelog_offset() == 3


# --- against memory:// and the real broker -------------------------------------------


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    bootstrap = (
        "memory://" if request.param == "memory" else request.getfixturevalue("kafka_bootstrap")
    )
    t = open_transport(bootstrap)
    yield t
    t.close()


class Changelog:
    """A fresh two-partition compacted topic and a transactional producer writing to it."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.topic = f"restore-test-{uuid.uuid4().hex[:12]}.state-changelog"
        transport.ensure_topics(
            [TopicSpec(self.topic, partitions=2, config={"cleanup.policy": "compact"})]
        )
        self.tp = TopicPartition(self.topic, 0)
        self.producer = transport.transactional_producer(f"restore-test-{uuid.uuid4().hex}")
        self.producer.init_transactions()

    def transaction(
        self, records: list[tuple[bytes, bytes | None]], *, commit: bool = True, partition: int = 0
    ) -> None:
        p = self.producer
        p.begin_transaction()
        for key, value in records:
            p.produce(self.topic, partition, key, value)
        # Flushed before an abort too, so that the aborted records are really in the log.
        assert p.flush(30) == 0
        if commit:
            p.commit_transaction()
        else:
            p.abort_transaction()

    def restore(self, store: PartitionStore, **kwargs: Any) -> int:
        consumer = self.transport.consumer(group_id=None)
        try:
            applied = restore_partition(store, consumer, self.tp, poll_timeout=0.2, **kwargs)
            assert consumer.assignment() == []
            return applied
        finally:
            consumer.close()

    def high_watermark(self) -> int:
        consumer = self.transport.consumer(group_id=None)
        try:
            return consumer.watermarks(self.tp)[1]
        finally:
            consumer.close()

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def changelog(transport: Transport) -> Iterator[Changelog]:
    c = Changelog(transport)
    yield c
    c.close()


def test_restore_equals_committed_state(changelog: Changelog, tmp_path: Path) -> None:
    changelog.transaction([(b"i/a", b"1"), (b"i/b", b"1"), (b"h/a/00000000", b"h0")])
    changelog.transaction([(b"i/a", b"ABORTED"), (b"i/x", b"ABORTED")], commit=False)
    changelog.transaction([(b"i/other", b"elsewhere")], partition=1)
    changelog.transaction([(b"i/b", b"2"), (b"i/a", None), (b"t/000000000001000/b/1", b"t")])
    # A trailing aborted transaction: only its marker and records follow the last commit.
    changelog.transaction([(b"i/z", b"ABORTED")], commit=False)
    high = changelog.high_watermark()
    if changelog.transport.bootstrap != "memory://":
        # Kafka: 10 records and 4 markers on partition 0, of which 6 records are committed.
        assert high == 13

    store = RocksDBStore(tmp_path / "db")
    try:
        progress: list[tuple[int, int]] = []
        applied = changelog.restore(store, progress=lambda d, t: progress.append((d, t)))
        assert applied == 6
        assert dict(store.iter_prefix(b"")) == {
            b"i/b": b"2",
            b"h/a/00000000": b"h0",
            b"t/000000000001000/b/1": b"t",
        }
        assert store.changelog_offset() == high
        assert progress[-1] == (high, high)
    finally:
        store.close()


def test_restore_from_checkpoint_reads_only_the_tail(changelog: Changelog) -> None:
    changelog.transaction([(b"i/head", b"from-changelog"), (b"i/a", b"1")])
    store = SpyStore()
    assert changelog.restore(store) == 2
    checkpoint = store.changelog_offset()
    assert checkpoint == changelog.high_watermark()

    # Local state that differs from the head proves the head is not re-read.
    store.write({b"i/head": b"local"}, checkpoint)
    changelog.transaction([(b"i/a", None), (b"i/tail", b"t")])
    store.writes.clear()
    assert changelog.restore(store) == 2
    assert dict(store.iter_prefix(b"")) == {b"i/head": b"local", b"i/tail": b"t"}
    assert store.changelog_offset() == changelog.high_watermark()
    assert all(b"i/head" not in changes for changes, _ in store.writes)


def test_tombstones_delete_restored_keys(changelog: Changelog) -> None:
    changelog.transaction([(b"e/@counter@1", b"5"), (b"e/@counter@2", b"7")])
    store = MemoryStore()
    changelog.restore(store)
    assert store.get(b"e/@counter@1") == b"5"
    changelog.transaction([(b"e/@counter@1", None)])
    assert changelog.restore(store) == 1
    assert dict(store.iter_prefix(b"e/")) == {b"e/@counter@2": b"7"}


def test_up_to_date_store_restores_nothing(changelog: Changelog) -> None:
    changelog.transaction([(b"i/a", b"1")])
    store = SpyStore()
    assert changelog.restore(store) == 1
    store.writes.clear()
    assert changelog.restore(store) == 0
    # Only the checkpoint's time moves: the store is known complete as of now.
    assert store.writes == [({}, changelog.high_watermark())]


def test_checkpoint_beyond_high_watermark_raises(changelog: Changelog) -> None:
    changelog.transaction([(b"i/a", b"1")])
    high = changelog.high_watermark()
    store = MemoryStore()
    store.write({b"i/a": b"stale"}, high + 100)
    with pytest.raises(StoreError, match=rf"offset {high + 100}.*high watermark {high}"):
        changelog.restore(store)
    assert store.get(b"i/a") == b"stale"


def test_restore_in_small_batches_with_aborts_interleaved(changelog: Changelog) -> None:
    expected: dict[bytes, bytes] = {}
    for n in range(6):
        batch = [(b"h/i%d/%08d" % (n, j), b"v%d" % j) for j in range(5)]
        changelog.transaction(batch, commit=n % 2 == 0)
        if n % 2 == 0:
            expected.update(batch)
    store = SpyStore()
    assert changelog.restore(store, max_records=4) == len(expected)
    assert dict(store.iter_prefix(b"")) == expected
    offsets = [o for _, o in store.writes]
    assert offsets == sorted(set(offsets))
    assert offsets[-1] == changelog.high_watermark()
    assert all(len(changes) <= 4 for changes, _ in store.writes)


# --- stale stores: wiped and restored in full (issue 10, hole 6) ----------------------

DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("offset", "taken_at", "retention_ms", "stale"),
    [
        (None, None, DAY_MS, None),  # empty store: nothing to wipe
        (50, 0.0, DAY_MS, "below the changelog's low watermark 100"),
        (200, 0.0, DAY_MS, None),  # nothing follows the checkpoint: its age does not matter
        (150, None, DAY_MS, "no time"),
        (150, 0.0, None, None),  # retention unknown: the age is not checked
        (150, 1_000_000.0 - 22 * 3600, DAY_MS, None),  # within a day less an hour
        (150, 1_000_000.0 - 24 * 3600 + 3599, DAY_MS, "old"),
        (150, 1_000_000.0 - 0.4, 1000, None),  # short retentions keep half as margin
        (150, 1_000_000.0 - 0.6, 1000, "old"),
    ],
)
def test_stale_reason(
    offset: int | None,
    taken_at: float | None,
    retention_ms: int | None,
    stale: str | None,
) -> None:
    reason = stale_reason(offset, taken_at, 100, 200, 1_000_000.0, retention_ms)
    if stale is None:
        assert reason is None
    else:
        assert reason is not None and stale in reason


def test_trusted_checkpoint_age_keeps_a_margin() -> None:
    assert trusted_checkpoint_age(DAY_MS) == 23 * 3600  # at most an hour
    assert trusted_checkpoint_age(2000) == 1.0  # half of a short retention


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def restorer_of(
    store: PartitionStore,
    consumer: Consumer,
    clock: Clock,
    *,
    retention_ms: int | None = DAY_MS,
    max_records: int = 10_000,
) -> Restorer:
    restorer = Restorer(
        lambda: consumer,
        TP.topic,
        open_store=lambda _: store,
        max_records=max_records,
        retention_ms=lambda: retention_ms,
        clock=clock,
    )
    restorer.add([TP.partition])
    return restorer


def step_to_end(restorer: Restorer, clock: Clock | None = None, tick: float = 0.0) -> Restored:
    for _ in range(100):
        done = restorer.step()
        if done:
            return done[0]
        if clock is not None:
            clock.now += tick
    raise AssertionError("the restore did not end")


def test_a_stale_store_is_wiped_and_restored_in_full() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    store.write({b"zombie": b"deleted long ago", b"b": b"old"}, 6, checkpoint_time=0.0)
    clock = Clock()
    restored = step_to_end(restorer_of(store, consumer, clock))
    assert restored.wiped is not None and "old" in restored.wiped
    assert spy.first_offsets[0] == 0  # from the beginning
    assert state(store) == {b"b": b"2", b"c": b"1"}  # the zombie is gone
    assert store.changelog_offset() == 12
    assert store.checkpoint_time() == clock.now


def test_a_recent_store_resumes_from_its_checkpoint() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    clock = Clock()
    store.write({b"a": b"local"}, 6, checkpoint_time=clock.now - 3600)
    restored = step_to_end(restorer_of(store, consumer, clock))
    assert restored.wiped is None
    assert spy.first_offsets == [6]
    assert state(store) == {b"b": b"2", b"c": b"1"}


def test_a_checkpoint_below_the_low_watermark_is_wiped() -> None:
    spy, consumer = scripted([(b"a", b"1"), "marker"], low=100)
    store = SpyStore()
    clock = Clock()
    store.write({b"stale": b"x"}, 50, checkpoint_time=clock.now)
    restored = step_to_end(restorer_of(store, consumer, clock))
    assert restored.wiped is not None and "low watermark" in restored.wiped
    assert state(store) == {b"a": b"1"}
    assert spy.first_offsets == [100]


def test_an_interrupted_restore_keeps_the_time_of_the_checkpoint_it_started_from() -> None:
    _, consumer = scripted(LOG)
    store = SpyStore()
    clock = Clock()
    taken = clock.now - 3600
    store.write({}, 2, checkpoint_time=taken)
    restorer = restorer_of(store, consumer, clock, max_records=2)
    clock.now += 10
    assert restorer.step() == []  # one slice, not the end
    assert store.changelog_offset() == 8
    # Records past offset 8 may be as old as the checkpoint it started from.
    assert store.checkpoint_time() == taken
    assert restorer.cancel(TP.partition) is store
    # Resumed later: the end writes the time the high watermark was read.
    clock.now += 10
    restored = step_to_end(restorer_of(store, consumer, clock, max_records=2))
    assert restored.wiped is None
    assert store.changelog_offset() == 12
    assert store.checkpoint_time() == clock.now


def test_an_interrupted_restore_of_an_empty_store_keeps_the_time_it_began() -> None:
    _, consumer = scripted(LOG)
    store = SpyStore()
    clock = Clock()
    began = clock.now
    restorer = restorer_of(store, consumer, clock, max_records=2)
    assert restorer.step() == []
    assert store.checkpoint_time() == began


def test_a_restore_that_outlives_the_tombstone_retention_starts_again() -> None:
    spy, consumer = scripted(LOG)
    store = SpyStore()
    clock = Clock()
    restorer = restorer_of(store, consumer, clock, retention_ms=2000, max_records=2)
    assert restorer.step() == []
    clock.now += 1.5  # past 2 s less the 1 s margin since the restore began
    restored = step_to_end(restorer, clock, tick=0.1)
    assert spy.first_offsets[:2] == [0, 0]  # read from the beginning again
    assert state(store) == {b"b": b"2", b"c": b"1"}
    assert restored.applied == 5


def test_several_partitions_restore_together(changelog: Changelog) -> None:
    changelog.transaction([(b"i/a", b"1"), (b"i/b", b"1")], partition=0)
    changelog.transaction([(b"i/c", b"1")], partition=1)
    changelog.transaction([(b"i/a", None)], partition=0)
    stores = {0: SpyStore(), 1: SpyStore()}
    consumer = changelog.transport.consumer(group_id=None)
    restorer = Restorer(
        lambda: consumer,
        changelog.topic,
        open_store=lambda p: stores[p],
        poll_timeout=0.2,
    )
    restorer.add([0, 1])
    ended: dict[int, Restored] = {}
    for _ in range(200):
        for restored in restorer.step():
            ended[restored.partition] = restored
        if not restorer.busy:
            break
    consumer.close()
    assert sorted(ended) == [0, 1]
    assert state(stores[0]) == {b"i/b": b"1"}
    assert state(stores[1]) == {b"i/c": b"1"}
    assert ended[0].store is stores[0] and ended[0].applied == 3
    assert restorer.close() == []


# --- the changelog's tombstone retention, from the broker ------------------------------


def test_tombstone_retention_comes_from_the_broker(transport: Transport) -> None:
    topic = f"retention-{uuid.uuid4().hex[:12]}"
    transport.ensure_topics(
        [
            TopicSpec(
                topic,
                partitions=1,
                config={"cleanup.policy": "compact", "delete.retention.ms": "1234"},
            )
        ]
    )
    assert TombstoneRetention(transport, topic, fallback_ms=99)() == 1234
    # A topic the broker cannot describe: the spec's value.
    assert TombstoneRetention(transport, f"missing-{uuid.uuid4().hex}", fallback_ms=99)() == 99


def test_tombstone_retention_of_a_hub_falls_back_to_its_spec(tmp_path: Path) -> None:
    spec = (Path(__file__).parents[2] / "topology" / "default.toml").read_text()
    custom = tmp_path / "hub.toml"
    custom.write_text(
        spec.replace('"delete.retention.ms" = "86400000"', '"delete.retention.ms" = "5000"', 1)
    )
    transport = open_transport(f"memory://{uuid.uuid4().hex[:8]}")
    try:
        # The broker has no such topic to describe: the spec's value.
        assert TombstoneRetention.of_hub(transport, "nohub")() == DAY_MS
        assert TombstoneRetention.of_hub(transport, "nohub", custom)() == 5000
    finally:
        transport.close()
