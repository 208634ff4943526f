"""The transport contract, run against both ``memory://`` and the real Kafka broker.

Each test uses fresh topic names, group ids and transactional ids, so tests never
see each other's records. Waiting is bounded by deadlines (generous on Kafka,
where rebalances and transaction markers take a while), never by fixed sleeps,
except where a test asserts that something does NOT arrive within a quiet period.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from durafka.errors import TopologyMismatchError, TransactionError, TransportError
from durafka.topology import TopicSpec
from durafka.transport import open_transport
from durafka.transport.base import (
    Consumer,
    Producer,
    Record,
    TopicPartition,
    TransactionalProducer,
    Transport,
)
from durafka.transport.limits import record_size
from durafka.transport.memory import MemoryBroker

# Short group timeouts so that Kafka rebalances finish quickly in tests.
_GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@dataclass
class Env:
    """One transport plus helpers that create uniquely named things and clean up."""

    kind: str
    transport: Transport
    quiet: float  # how long "nothing arrives" is observed
    deadline: float  # how long "something arrives" may take
    closers: list[Any] = field(default_factory=list)

    def topic(self, partitions: int = 1, **config: str) -> str:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        self.transport.ensure_topics([TopicSpec(name, partitions, 1, dict(config))])
        return name

    def consumer(self, group_id: str | None = None) -> Consumer:
        consumer = self.transport.consumer(group_id, **_GROUP_CONFIG)
        self.closers.append(consumer)
        return consumer

    def producer(self) -> Producer:
        producer = self.transport.producer()
        self.closers.append(producer)
        return producer

    def transactional(self, transactional_id: str | None = None) -> TransactionalProducer:
        tid = transactional_id or f"tx-{uuid.uuid4().hex[:10]}"
        producer = self.transport.transactional_producer(tid, **{"transaction.timeout.ms": 10000})
        self.closers.append(producer)
        producer.init_transactions(30.0)
        return producer


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    if request.param == "memory":
        name = f"contract-{uuid.uuid4().hex[:8]}"
        result = Env("memory", open_transport(f"memory://{name}"), quiet=0.2, deadline=5.0)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        result = Env("kafka", open_transport(bootstrap), quiet=1.5, deadline=30.0)
    yield result
    for client in reversed(result.closers):
        client.close()
    result.transport.close()
    if result.kind == "memory":
        MemoryBroker.reset(result.transport.bootstrap.removeprefix("memory://"))


def poll_until(consumer: Consumer, count: int, timeout: float) -> list[Record]:
    """Poll until ``count`` records arrived or ``timeout`` passed."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        records += consumer.poll_batch(100, 0.1)
    return records


def poll_for(consumer: Consumer, seconds: float) -> list[Record]:
    """Everything that arrives within ``seconds``."""
    records: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records += consumer.poll_batch(100, 0.05)
    return records


def values(records: list[Record]) -> list[bytes | None]:
    return [r.value() for r in records]


def from_start(env: Env, topic: str, partitions: int = 1) -> Consumer:
    consumer = env.consumer()
    consumer.assign({TopicPartition(topic, p): None for p in range(partitions)})
    return consumer


def test_committed_transaction_becomes_visible_at_once(env: Env) -> None:
    topic = env.topic()
    reader = from_start(env, topic)
    producer = env.transactional()

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, 0, b"k", b"v%d" % i)
    assert producer.flush(10.0) == 0
    assert poll_for(reader, env.quiet) == []

    producer.commit_transaction()
    records = poll_until(reader, 3, env.deadline)
    assert values(records) == [b"v0", b"v1", b"v2"]
    assert [r.key() for r in records] == [b"k"] * 3
    assert all(r.error() is None and r.topic() == topic for r in records)


def test_headers_reach_consumers_in_order(env: Env) -> None:
    topic = env.topic()
    reader = from_start(env, topic)
    producer = env.producer()
    headers = [("trace", b"t-1"), ("empty", None), ("trace", b"t-2")]
    producer.produce(topic, 0, b"k", b"with", headers=headers)
    producer.produce(topic, 0, b"k", b"without")
    assert producer.flush(10.0) == 0
    records = poll_until(reader, 2, env.deadline)
    assert values(records) == [b"with", b"without"]
    assert records[0].headers() == headers
    assert not records[1].headers()


def test_a_record_over_message_max_bytes_is_refused_at_produce(env: Env) -> None:
    topic = env.topic()
    plain = env.transport.producer(**{"message.max.bytes": "10000"})
    env.closers.append(plain)
    headers = [("origin", b"test")]
    # The largest record that fits: key + value + headers + RECORD_OVERHEAD == 10,000.
    fits = b"x" * (10_000 - record_size(b"k", b"", headers))
    plain.produce(topic, 0, b"k", fits, headers=headers)
    with pytest.raises(TransportError, match="MSG_SIZE_TOO_LARGE"):
        plain.produce(topic, 0, b"k", fits + b"x", headers=headers)
    assert plain.flush(10.0) == 0

    producer = env.transport.transactional_producer(
        f"tx-{uuid.uuid4().hex[:10]}",
        **{"transaction.timeout.ms": 10000, "message.max.bytes": "10000"},
    )
    env.closers.append(producer)
    producer.init_transactions(30.0)
    producer.begin_transaction()
    with pytest.raises(TransactionError, match="MSG_SIZE_TOO_LARGE") as info:
        producer.produce(topic, 0, b"k", fits + b"x", headers=headers)
    assert not info.value.fatal
    producer.abort_transaction()
    reader = from_start(env, topic)
    assert values(poll_until(reader, 1, env.deadline) + poll_for(reader, env.quiet)) == [fits]


def test_aborted_transaction_is_never_visible(env: Env) -> None:
    topic = env.topic()
    reader = from_start(env, topic)
    producer = env.transactional()

    producer.begin_transaction()
    producer.produce(topic, 0, b"k", b"aborted")
    producer.flush(10.0)
    producer.abort_transaction()
    producer.begin_transaction()
    producer.produce(topic, 0, b"k", b"committed")
    producer.commit_transaction()

    records = poll_until(reader, 1, env.deadline)
    records += poll_for(reader, env.quiet)
    assert values(records) == [b"committed"]


def test_delivery_reports_carry_offsets_and_markers_take_offsets(env: Env) -> None:
    topic = env.topic()
    tp = TopicPartition(topic, 0)
    producer = env.transactional()
    delivered: list[tuple[Any, int | None]] = []

    def on_delivery(err: Any, record: Record) -> None:
        delivered.append((err, record.offset()))

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, 0, b"k%d" % i, b"v", on_delivery)
    producer.flush(10.0)
    # Reported by flush(), before the commit: the changelog checkpoint relies on it.
    assert delivered == [(None, 0), (None, 1), (None, 2)]
    producer.commit_transaction()

    producer.begin_transaction()
    producer.produce(topic, 0, b"k3", b"v", on_delivery)
    producer.produce(topic, 0, b"k4", b"v", on_delivery)
    producer.commit_transaction()
    producer.flush(10.0)
    # The commit marker of the first transaction took offset 3.
    assert delivered[3:] == [(None, 4), (None, 5)]

    reader = from_start(env, topic)
    records = poll_until(reader, 5, env.deadline)
    assert [r.offset() for r in records] == [0, 1, 2, 4, 5]
    # The high watermark is past the second marker; the position gets there too.
    deadline = time.monotonic() + env.deadline
    while reader.watermarks(tp)[1] != 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.watermarks(tp) == (0, 7)
    while reader.position(tp) != 7 and time.monotonic() < deadline:
        reader.poll_batch(10, 0.05)
    assert reader.position(tp) == 7


def test_send_offsets_commits_group_offsets_with_the_transaction(env: Env) -> None:
    source, sink = env.topic(), env.topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(source, 0)
    plain = env.producer()
    for i in range(3):
        plain.produce(source, 0, b"k", b"in%d" % i)
    plain.flush(10.0)

    worker = env.consumer(group)
    worker.assign({tp: None})
    assert len(poll_until(worker, 3, env.deadline)) == 3
    assert worker.committed([tp]) == {tp: None}
    producer = env.transactional()

    producer.begin_transaction()
    producer.produce(sink, 0, b"k", b"aborted")
    producer.send_offsets({tp: 2}, worker.group_metadata())
    producer.abort_transaction()
    assert worker.committed([tp]) == {tp: None}

    producer.begin_transaction()
    producer.produce(sink, 0, b"k", b"out")
    producer.send_offsets({tp: 3}, worker.group_metadata())
    producer.commit_transaction()

    other = env.consumer(group)
    assert other.committed([tp]) == {tp: 3}
    reader = from_start(env, sink)
    assert values(poll_until(reader, 1, env.deadline) + poll_for(reader, env.quiet)) == [b"out"]


def test_offset_metadata_is_committed_with_the_transaction(env: Env) -> None:
    source = env.topic(partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp0, tp1 = TopicPartition(source, 0), TopicPartition(source, 1)
    worker = env.consumer(group)
    worker.assign({tp0: None, tp1: None})
    assert worker.committed_metadata([tp0, tp1]) == {tp0: "", tp1: ""}
    producer = env.transactional()

    producer.begin_transaction()
    producer.send_offsets({tp0: 0, tp1: 0}, worker.group_metadata(), {tp0: "aborted"})
    producer.abort_transaction()
    assert worker.committed_metadata([tp0]) == {tp0: ""}

    producer.begin_transaction()
    producer.send_offsets({tp0: 0, tp1: 0}, worker.group_metadata(), {tp0: "r=5;n=3:2"})
    producer.commit_transaction()
    other = env.consumer(group)
    assert other.committed_metadata([tp0, tp1]) == {tp0: "r=5;n=3:2", tp1: ""}
    assert other.committed([tp0]) == {tp0: 0}

    # An offset committed again without metadata clears it (as Kafka does).
    producer.begin_transaction()
    producer.send_offsets({tp0: 0}, worker.group_metadata())
    producer.commit_transaction()
    assert other.committed_metadata([tp0]) == {tp0: ""}


def test_manual_assign_seek_position_and_watermarks(env: Env) -> None:
    topic = env.topic()
    tp = TopicPartition(topic, 0)
    producer = env.producer()
    for i in range(5):
        producer.produce(topic, 0, b"k", b"v%d" % i)
    assert producer.flush(10.0) == 0

    consumer = env.consumer()
    assert consumer.watermarks(tp) == (0, 5)
    consumer.assign({tp: None})
    assert consumer.assignment() == [tp]
    assert consumer.position(tp) == 0

    consumer.seek(tp, 3)  # right after assign: librdkafka's fetcher may not run yet
    assert consumer.position(tp) == 3
    records = poll_until(consumer, 2, env.deadline)
    assert [r.offset() for r in records] == [3, 4]
    assert values(records) == [b"v3", b"v4"]
    assert consumer.position(tp) == 5

    consumer.seek(tp, 1)
    assert consumer.position(tp) == 1
    assert [r.offset() for r in poll_until(consumer, 4, env.deadline)] == [1, 2, 3, 4]

    consumer.assign({tp: 2})
    assert consumer.position(tp) == 2
    assert [r.offset() for r in poll_until(consumer, 3, env.deadline)] == [2, 3, 4]

    consumer.unassign()
    assert consumer.assignment() == []
    with pytest.raises(TransportError, match="not assigned"):
        consumer.position(tp)
    with pytest.raises(TransportError, match="not assigned"):
        consumer.seek(tp, 0)
    consumer.pause([tp])  # ignored, as librdkafka does
    consumer.resume([tp])


def test_pause_and_resume(env: Env) -> None:
    topic = env.topic(partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = env.consumer()
    consumer.assign({tp0: None, tp1: None})
    consumer.pause([tp0])

    producer = env.producer()
    producer.produce(topic, 0, b"k", b"p0")
    producer.produce(topic, 1, b"k", b"p1")
    producer.flush(10.0)

    records = poll_until(consumer, 1, env.deadline) + poll_for(consumer, env.quiet)
    assert values(records) == [b"p1"]

    consumer.resume([tp0])
    records = poll_until(consumer, 1, env.deadline)
    assert [(r.partition(), r.value()) for r in records] == [(0, b"p0")]


def test_a_resumed_partition_is_fetched_again_at_once(env: Env) -> None:
    # librdkafka alone applies a resume only when the broker thread next wakes up
    # (~1 s when idle); the transport wakes it. 0.5 s is a generous bound for "at once".
    topic = env.topic(partitions=1)
    tp = TopicPartition(topic, 0)
    consumer = env.consumer()
    consumer.assign({tp: None})
    producer = env.producer()
    for n in range(3):
        producer.produce(topic, 0, b"k", f"v{n}".encode())
    producer.flush(10.0)
    assert values(poll_until(consumer, 3, env.deadline)) == [b"v0", b"v1", b"v2"]
    for round_ in range(3):
        consumer.pause([tp])
        producer.produce(topic, 0, b"k", f"r{round_}".encode())
        producer.flush(10.0)
        assert poll_for(consumer, 0.2) == []
        consumer.resume([tp])
        assert values(poll_until(consumer, 1, 0.5)) == [f"r{round_}".encode()]


@dataclass
class Member:
    """A group consumer that records its rebalance callbacks."""

    consumer: Consumer
    assigned: list[TopicPartition] = field(default_factory=list)
    revoked: list[TopicPartition] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)

    def join(self, topic: str) -> None:
        self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned += partitions
        for tp in partitions:
            self.positions[tp] = self.consumer.position(tp)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.revoked += partitions


def poll_members_until(members: list[Member], done: Any, timeout: float) -> list[Record]:
    """Poll every member in turn (rebalances need all of them) until ``done()``."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, [m.consumer.assignment() for m in members]
        for member in members:
            records += member.consumer.poll_batch(100, 0.05)
    return records


def test_group_members_split_partitions_cooperatively(env: Env) -> None:
    topic = env.topic(partitions=4)
    everything = [TopicPartition(topic, p) for p in range(4)]
    group = f"g-{uuid.uuid4().hex[:8]}"
    a, b = Member(env.consumer(group)), Member(env.consumer(group))

    a.join(topic)
    poll_members_until([a], lambda: a.consumer.assignment() == everything, env.deadline)
    assert sorted(a.assigned) == everything
    assert a.revoked == []

    b.join(topic)
    poll_members_until(
        [a, b],
        lambda: len(a.consumer.assignment()) == 2 and len(b.consumer.assignment()) == 2,
        env.deadline,
    )
    assert sorted(a.consumer.assignment() + b.consumer.assignment()) == everything
    # Cooperative: a gave up exactly what b got, and kept the rest without a revoke.
    assert sorted(a.revoked) == sorted(b.assigned) == b.consumer.assignment()

    b.consumer.close()
    assert sorted(b.revoked) == sorted(b.assigned)
    poll_members_until([a], lambda: a.consumer.assignment() == everything, env.deadline)
    assert sorted(a.assigned) == sorted(everything + a.revoked)


def test_group_member_starts_at_committed_offsets(env: Env) -> None:
    topic = env.topic()
    tp = TopicPartition(topic, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"
    producer = env.producer()
    for i in range(5):
        producer.produce(topic, 0, b"k", b"v%d" % i)
    producer.flush(10.0)

    committer = env.consumer(group)
    committer.assign({tp: 0})
    transactional = env.transactional()
    transactional.begin_transaction()
    transactional.send_offsets({tp: 3}, committer.group_metadata())
    transactional.commit_transaction()
    committer.close()

    member = Member(env.consumer(group))
    member.join(topic)
    records = poll_members_until([member], lambda: bool(member.assigned), env.deadline)
    records += poll_until(member.consumer, 2 - len(records), env.deadline)
    assert member.positions == {tp: 3}
    assert [r.offset() for r in records] == [3, 4]


def assert_only_the_successor_commits(
    env: Env, topic: str, successor: TransactionalProducer
) -> None:
    """``successor`` (a new producer with a fenced one's id) commits; readers of ``topic``
    see its record and nothing of the fenced producer's."""
    successor.begin_transaction()
    successor.produce(topic, 0, b"k", b"successor")
    successor.commit_transaction()
    reader = from_start(env, topic)
    records = poll_until(reader, 1, env.deadline) + poll_for(reader, env.quiet)
    assert values(records) == [b"successor"]


def test_zombie_producer_is_fenced(env: Env) -> None:
    topic = env.topic()
    tid = f"tx-{uuid.uuid4().hex[:10]}"
    zombie = env.transactional(tid)
    zombie.begin_transaction()
    zombie.produce(topic, 0, b"k", b"zombie")
    zombie.flush(10.0)

    successor = env.transactional(tid)
    with pytest.raises(TransactionError) as raised:
        zombie.produce(topic, 0, b"k", b"zombie again")
        zombie.commit_transaction()
    assert raised.value.fatal
    assert not raised.value.abortable

    assert_only_the_successor_commits(env, topic, successor)


def test_a_transaction_past_its_timeout_fences_its_producer(env: Env) -> None:
    """The broker aborts a transaction open longer than ``transaction.timeout.ms`` and
    bumps the producer's epoch: the producer gets the same fatal error as from a newer
    instance with its id (what the processor's static ranges must tell apart by time)."""
    topic = env.topic()
    tid = f"tx-{uuid.uuid4().hex[:10]}"
    slow = env.transport.transactional_producer(tid, **{"transaction.timeout.ms": 1000})
    env.closers.append(slow)
    slow.init_transactions(30.0)
    slow.begin_transaction()
    slow.produce(topic, 0, b"k", b"expired")
    slow.flush(10.0)
    # The dev broker looks for expired transactions every second
    # (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    time.sleep(3.0)
    with pytest.raises(TransactionError) as raised:
        slow.commit_transaction(10.0)
    assert raised.value.fatal, raised.value

    successor = env.transactional(tid)
    assert_only_the_successor_commits(env, topic, successor)


def test_ensure_topics_is_idempotent_and_refuses_a_mismatch(env: Env) -> None:
    name = f"contract-{uuid.uuid4().hex[:10]}"
    spec = TopicSpec(name, 3, 1, {"cleanup.policy": "compact"})
    env.transport.ensure_topics([spec])
    env.transport.ensure_topics([spec])
    assert env.transport.partition_count(name) == 3

    with pytest.raises(TopologyMismatchError, match="partition count expected 2, actual 3"):
        env.transport.ensure_topics([TopicSpec(name, 2, 1, {"cleanup.policy": "compact"})])
    with pytest.raises(TopologyMismatchError, match=r"cleanup\.policy"):
        env.transport.ensure_topics([TopicSpec(name, 3, 1, {"cleanup.policy": "delete"})])
