"""Details of the ``memory://`` broker that the Kafka contract tests cannot pin down."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from durafka.errors import ConfigurationError, TransactionError, TransportError
from durafka.topology import TopicSpec
from durafka.transport import open_transport
from durafka.transport.base import Record, TopicPartition
from durafka.transport.limits import record_size
from durafka.transport.memory import (
    MemoryBroker,
    MemoryConsumer,
    MemoryRecord,
    MemoryTransport,
)


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    name = f"unit-{uuid.uuid4().hex[:8]}"
    yield MemoryTransport(MemoryBroker.get(name))
    MemoryBroker.reset(name)


def make_topic(transport: MemoryTransport, partitions: int = 1, compact: bool = False) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    config = {"cleanup.policy": "compact"} if compact else {}
    transport.ensure_topics([TopicSpec(name, partitions, 1, config)])
    return name


def read_all(transport: MemoryTransport, topic: str, partition: int = 0) -> list[Record]:
    consumer = transport.consumer()
    consumer.assign({TopicPartition(topic, partition): None})
    records: list[Record] = []
    while batch := consumer.poll_batch(1000, 0):
        records += batch
    return records


def test_brokers_are_named_and_reset() -> None:
    name = f"named-{uuid.uuid4().hex[:8]}"
    broker = MemoryBroker.get(name)
    assert MemoryBroker.get(name) is broker
    assert MemoryBroker.get("") is not broker
    transport = open_transport(f"memory://{name}")
    assert isinstance(transport, MemoryTransport)
    assert transport.broker is broker
    assert transport.bootstrap == f"memory://{name}"
    assert open_transport("memory://").bootstrap == "memory://"

    MemoryBroker.reset(name)
    assert MemoryBroker.get(name) is not broker
    MemoryBroker.reset(name)


def test_a_topic_refuses_records_over_its_max_message_bytes(transport: MemoryTransport) -> None:
    # The broker's check, which Kafka reports in the delivery report (RECORD_TOO_LARGE).
    name = f"t-{uuid.uuid4().hex[:8]}"
    transport.ensure_topics([TopicSpec(name, 1, 1, {"max.message.bytes": "5000"})])
    producer = transport.producer(**{"message.max.bytes": "1000000"})
    fits = b"x" * (5000 - 61 - record_size(b"k", b""))
    producer.produce(name, 0, b"k", fits)
    with pytest.raises(TransportError, match=r"max\.message\.bytes"):
        producer.produce(name, 0, b"k", fits + b"x")
    assert [r.value() for r in read_all(transport, name)] == [fits]


def test_open_transaction_holds_back_later_records(transport: MemoryTransport) -> None:
    topic = make_topic(transport)
    tp = TopicPartition(topic, 0)
    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    plain = transport.producer()
    reader = transport.consumer()
    reader.assign({tp: None})

    plain.produce(topic, 0, b"k", b"before")
    txn.begin_transaction()
    txn.produce(topic, 0, b"k", b"in txn")
    plain.produce(topic, 0, b"k", b"after")
    # read_committed stops at the last stable offset: the open transaction's first record.
    assert reader.watermarks(tp) == (0, 1)
    assert [r.value() for r in reader.poll_batch(10, 0)] == [b"before"]
    assert reader.poll_batch(10, 0) == []

    txn.commit_transaction()
    assert reader.watermarks(tp) == (0, 4)
    assert [r.value() for r in reader.poll_batch(10, 0)] == [b"in txn", b"after"]
    assert reader.position(tp) == 4


def test_flush_inside_a_transaction_reports_offsets_before_commit(
    transport: MemoryTransport,
) -> None:
    topic = make_topic(transport)
    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    delivered: list[int | None] = []
    txn.begin_transaction()
    txn.produce(topic, 0, b"a", b"1", lambda err, rec: delivered.append(rec.offset()))
    txn.produce(topic, 0, b"b", b"2", lambda err, rec: delivered.append(rec.offset()))
    assert delivered == []  # like librdkafka: only inside poll(), flush() or commit
    assert txn.flush() == 0
    assert delivered == [0, 1]
    txn.abort_transaction()
    assert read_all(transport, topic) == []


def test_transaction_timeout_aborts_and_fences_the_producer(transport: MemoryTransport) -> None:
    """As Kafka's coordinator: the expired transaction is aborted and the producer's
    epoch bumped, so the producer is fenced (librdkafka's fatal ``_FENCED``); a new
    producer with the same id goes on."""
    topic = make_topic(transport)
    tp = TopicPartition(topic, 0)
    txn = transport.transactional_producer("tx", **{"transaction.timeout.ms": 50})
    txn.init_transactions()
    txn.begin_transaction()
    txn.produce(topic, 0, b"k", b"stale")
    reader = transport.consumer()
    reader.assign({tp: None})
    assert reader.watermarks(tp) == (0, 0)

    time.sleep(0.1)
    assert reader.poll_batch(10, 0) == []
    assert reader.watermarks(tp) == (0, 2)  # the aborted record and its marker
    with pytest.raises(TransactionError, match=r"fenced.*transaction\.timeout\.ms") as raised:
        txn.commit_transaction()
    assert raised.value.fatal
    with pytest.raises(TransactionError, match="fenced"):
        txn.abort_transaction()

    again = transport.transactional_producer("tx", **{"transaction.timeout.ms": 50})
    again.init_transactions()
    again.begin_transaction()
    again.produce(topic, 0, b"k", b"fresh")
    again.commit_transaction()
    assert [r.value() for r in reader.poll_batch(10, 0)] == [b"fresh"]


def test_abort_without_a_transaction_is_a_no_op(transport: MemoryTransport) -> None:
    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    txn.abort_transaction()
    with pytest.raises(TransactionError, match="no open transaction"):
        txn.commit_transaction()


def test_fenced_producer_fails_on_every_call(transport: MemoryTransport) -> None:
    topic = make_topic(transport)
    old = transport.transactional_producer("tx")
    old.init_transactions()
    old.begin_transaction()
    old.produce(topic, 0, b"k", b"old")
    new = transport.transactional_producer("tx")
    new.init_transactions()

    calls: list[Callable[[], object]] = [
        lambda: old.produce(topic, 0, b"k", b"v"),
        old.commit_transaction,
        old.abort_transaction,
        old.begin_transaction,
    ]
    for call in calls:
        with pytest.raises(TransactionError, match="fenced") as raised:
            call()
        assert raised.value.fatal
    old.close()  # must not touch the successor's state
    new.begin_transaction()
    new.produce(topic, 0, b"k", b"new")
    new.commit_transaction()
    assert [r.value() for r in read_all(transport, topic)] == [b"new"]


def test_offsets_of_a_departed_member_are_refused(transport: MemoryTransport) -> None:
    topic = make_topic(transport)
    member = transport.consumer("g")
    member.subscribe([topic])
    member.poll_batch(10, 0)
    assert member.assignment() == [TopicPartition(topic, 0)]
    metadata = member.group_metadata()
    member.close()

    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    txn.begin_transaction()
    with pytest.raises(TransactionError, match="no longer a member"):
        txn.send_offsets({TopicPartition(topic, 0): 1}, metadata)
    txn.abort_transaction()


def test_offsets_with_metadata_from_before_a_rebalance_are_refused(
    transport: MemoryTransport,
) -> None:
    topic = make_topic(transport, partitions=2)
    a, b = transport.consumer("g"), transport.consumer("g")
    a.subscribe([topic])
    a.poll_batch(10, 0)
    stale = a.group_metadata()
    b.subscribe([topic])
    a.poll_batch(10, 0)  # a gives up a partition: a new generation
    b.poll_batch(10, 0)
    assert len(a.assignment()) == len(b.assignment()) == 1

    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    txn.begin_transaction()
    with pytest.raises(TransactionError, match="generation"):
        txn.send_offsets({TopicPartition(topic, 0): 1}, stale)
    txn.send_offsets({TopicPartition(topic, 0): 1}, a.group_metadata())
    txn.commit_transaction()
    assert a.committed([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 1}


def test_partition_moves_only_after_the_old_owner_revoked(transport: MemoryTransport) -> None:
    topic = make_topic(transport, partitions=2)
    events: list[str] = []
    a, b = transport.consumer("g"), transport.consumer("g")
    a.subscribe(
        [topic],
        on_assign=lambda ps: events.append(f"a+{[p.partition for p in ps]}"),
        on_revoke=lambda ps: events.append(f"a-{[p.partition for p in ps]}"),
    )
    a.poll_batch(10, 0)
    b.subscribe([topic], on_assign=lambda ps: events.append(f"b+{[p.partition for p in ps]}"))
    b.poll_batch(10, 0)  # a has not revoked yet: b gets nothing
    assert b.assignment() == []
    a.poll_batch(10, 0)
    b.poll_batch(10, 0)
    assert events == ["a+[0, 1]", "a-[1]", "b+[1]"]


def test_subscribing_before_the_topic_exists_assigns_it_once_created(
    transport: MemoryTransport,
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    assigned: list[TopicPartition] = []
    consumer = transport.consumer("g")
    consumer.subscribe([name], on_assign=assigned.extend)
    assert consumer.poll_batch(10, 0) == []
    assert assigned == []

    transport.ensure_topics([TopicSpec(name, 2)])
    transport.producer().produce(name, 1, b"k", b"v")
    assert [r.value() for r in consumer.poll_batch(10, 1.0)] == [b"v"]
    assert assigned == [TopicPartition(name, 0), TopicPartition(name, 1)]


def test_consumers_without_group_cannot_use_group_calls(transport: MemoryTransport) -> None:
    topic = make_topic(transport)
    consumer = transport.consumer()
    calls: list[Callable[[], object]] = [
        lambda: consumer.subscribe([topic]),
        lambda: consumer.committed([TopicPartition(topic, 0)]),
        consumer.group_metadata,
    ]
    for call in calls:
        with pytest.raises(ConfigurationError):
            call()
    with pytest.raises(TransportError, match="not assigned"):
        consumer.seek(TopicPartition(topic, 0), 0)


def test_unknown_topics_and_keyless_compacted_records_are_refused(
    transport: MemoryTransport,
) -> None:
    compacted = make_topic(transport, compact=True)
    producer = transport.producer()
    with pytest.raises(TransportError, match="does not exist"):
        producer.produce("nope", 0, b"k", b"v")
    with pytest.raises(TransportError, match="partition 1 does not exist"):
        producer.produce(compacted, 1, b"k", b"v")
    with pytest.raises(TransportError, match="only accepts records with a key"):
        producer.produce(compacted, 0, None, b"v")
    with pytest.raises(TransportError, match="does not exist"):
        transport.partition_count("nope")


def test_poll_batch_wakes_up_when_data_arrives(transport: MemoryTransport) -> None:
    topic = make_topic(transport)
    consumer = transport.consumer()
    consumer.assign({TopicPartition(topic, 0): None})

    started = time.monotonic()
    assert consumer.poll_batch(10, 0.05) == []
    assert time.monotonic() - started >= 0.05

    producer = transport.producer()
    timer = threading.Timer(0.05, lambda: producer.produce(topic, 0, b"k", b"late"))
    timer.start()
    started = time.monotonic()
    records = consumer.poll_batch(10, 10.0)
    waited = time.monotonic() - started
    timer.join()
    assert [r.value() for r in records] == [b"late"]
    assert waited < 5.0


def test_poll_batch_respects_max_records_and_serves_partitions_fairly(
    transport: MemoryTransport,
) -> None:
    topic = make_topic(transport, partitions=2)
    producer = transport.producer()
    for p in (0, 1):
        for i in range(100):
            producer.produce(topic, p, b"k", b"%d" % i)
    consumer = transport.consumer()
    consumer.assign({TopicPartition(topic, 0): None, TopicPartition(topic, 1): None})
    first, second = consumer.poll_batch(30, 0), consumer.poll_batch(30, 0)
    assert len(first) == len(second) == 30
    assert {r.partition() for r in first} != {r.partition() for r in second}
    rest = consumer.poll_batch(1000, 0)
    assert len(rest) == 140
    by_partition = sorted((r.partition(), r.offset()) for r in first + second + rest)
    assert by_partition == [(p, o) for p in (0, 1) for o in range(100)]


def test_compaction_keeps_the_latest_value_per_key_and_drops_old_tombstones(
    transport: MemoryTransport,
) -> None:
    topic = make_topic(transport, compact=True)
    producer = transport.producer()
    for i in range(10):
        producer.produce(topic, 0, b"a", b"a%d" % i)
        producer.produce(topic, 0, b"b", b"b%d" % i)
    producer.produce(topic, 0, b"gone", b"x")
    producer.produce(topic, 0, b"gone", None)
    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    txn.begin_transaction()
    txn.produce(topic, 0, b"c", b"aborted")
    txn.abort_transaction()

    transport.broker.compact(topic)
    records = read_all(transport, topic)
    assert [(r.key(), r.value(), r.offset()) for r in records] == [
        (b"a", b"a9", 18),
        (b"b", b"b9", 19),
        (b"gone", None, 21),  # a tombstone survives one compaction
    ]
    producer.produce(topic, 0, b"a", b"a10")
    transport.broker.compact(topic)
    assert [(r.key(), r.value()) for r in read_all(transport, topic)] == [
        (b"b", b"b9"),
        (b"a", b"a10"),
    ]


def test_compaction_keeps_tombstones_for_the_topics_delete_retention(
    transport: MemoryTransport,
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    config = {"cleanup.policy": "compact", "delete.retention.ms": "300"}
    transport.ensure_topics([TopicSpec(topic, 1, 1, config)])
    assert transport.describe_topics([TopicSpec(topic, 1, 1, config)])[topic].config == config
    producer = transport.producer()
    producer.produce(topic, 0, b"gone", b"x")
    producer.produce(topic, 0, b"gone", None)
    transport.broker.compact(topic)
    transport.broker.compact(topic)
    # Compacted twice, but younger than delete.retention.ms: readers still see it.
    assert [(r.key(), r.value()) for r in read_all(transport, topic)] == [(b"gone", None)]
    time.sleep(0.35)
    transport.broker.compact(topic)
    assert read_all(transport, topic) == []


def test_compaction_runs_by_itself_and_readers_keep_their_place(
    transport: MemoryTransport,
) -> None:
    topic = make_topic(transport, compact=True)
    tp = TopicPartition(topic, 0)
    producer = transport.producer()
    reader = transport.consumer()
    reader.assign({tp: None})
    seen: dict[bytes | None, bytes | None] = {}
    for i in range(5000):
        producer.produce(topic, 0, b"k%d" % (i % 7), b"%d" % i)
        if i % 1000 == 0:
            seen.update((r.key(), r.value()) for r in reader.poll_batch(300, 0))
    while batch := reader.poll_batch(1000, 0):
        seen.update((r.key(), r.value()) for r in batch)
    assert seen == {b"k%d" % k: b"%d" % max(i for i in range(5000) if i % 7 == k) for k in range(7)}
    assert reader.position(tp) == 5000
    assert len(read_all(transport, topic)) < 1024  # compacted without being asked


def test_positions_inside_compacted_holes_move_to_the_next_record(
    transport: MemoryTransport,
) -> None:
    topic = make_topic(transport, compact=True)
    tp = TopicPartition(topic, 0)
    producer = transport.producer()
    for i in range(6):
        producer.produce(topic, 0, b"same", b"%d" % i)
    producer.produce(topic, 0, b"other", b"x")
    transport.broker.compact(topic)
    consumer = transport.consumer()
    consumer.assign({tp: 2})
    assert [r.offset() for r in consumer.poll_batch(10, 0)] == [5, 6]
    assert consumer.position(tp) == 7


def test_lag_counts_uncommitted_and_in_flight_records(transport: MemoryTransport) -> None:
    topic = make_topic(transport, partitions=2)
    tp0 = TopicPartition(topic, 0)
    assert transport.broker.lag("g", topic) == 0
    plain = transport.producer()
    plain.produce(topic, 0, b"k", b"a")
    plain.produce(topic, 1, b"k", b"b")
    assert transport.broker.lag("g", topic) == 2

    consumer = transport.consumer("g")
    consumer.assign({tp0: None})
    txn = transport.transactional_producer("tx")
    txn.init_transactions()
    txn.begin_transaction()
    txn.produce(topic, 0, b"k", b"c")  # in flight: counts until it is committed or aborted
    txn.send_offsets({tp0: 1}, consumer.group_metadata())
    assert transport.broker.lag("g", topic) == 3
    txn.commit_transaction()
    assert transport.broker.lag("g", topic) == 2  # "c" on 0 and "b" on 1

    txn.begin_transaction()
    txn.send_offsets({tp0: 4}, consumer.group_metadata())  # past "c" and its marker
    txn.commit_transaction()
    assert transport.broker.lag("g", topic) == 1


def test_records_have_the_message_methods() -> None:
    record: Record = MemoryRecord("t", 1, 7, b"k", b"v", 1234, True)
    assert (record.topic(), record.partition(), record.offset()) == ("t", 1, 7)
    assert (record.key(), record.value(), record.error()) == (b"k", b"v", None)
    assert record.timestamp() == (1, 1234)


def test_close_is_idempotent_and_closed_consumer_refuses_to_poll(
    transport: MemoryTransport,
) -> None:
    consumer: MemoryConsumer = transport.consumer("g")
    consumer.close()
    consumer.close()
    with pytest.raises(TransportError, match="closed"):
        consumer.poll_batch(1, 0)


#: Runs in a fresh interpreter: an orchestration end to end on memory://, then the
#: names of the Kafka client libraries that got imported.
_MEMORY_ONLY = """
import asyncio, sys
import durafka
from durafka.testing import TestEnvironment

app = durafka.App("no-kafka")

@app.activity
def twice(x: int) -> int:
    return 2 * x

@app.orchestration
async def run(ctx: durafka.OrchestrationContext, x: int) -> int:
    return await ctx.call_activity(twice, x)

async def main() -> None:
    async with TestEnvironment(app) as env:
        assert await env.wait_for_completion(await env.client.start_new(run, 21)) == 42

asyncio.run(main())
loaded = {m.split(".")[0] for m in sys.modules}
print(sorted(loaded & {"confluent_kafka", "aiokafka"}))
"""


def test_memory_mode_loads_no_kafka_client_library() -> None:
    # Embedded mode is for users' unit tests: it must not need (or pay for) the Kafka clients.
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_ONLY], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
