"""Kafka transactions with confluent-kafka, the engine's exactly-once path.

Consume-transform-produce as the processor does it: outputs and the consumer
offsets commit together (``send_offsets_to_transaction``) or not at all.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from durafka.partitioning import partition_for
from tests.support.kafka import consume_until, create_topic, values


def _consume(consumer: Consumer, count: int, timeout: float = 30.0) -> list[Message]:
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for record in consumer.consume(count - len(records), timeout=0.5):
            assert record.error() is None, record.error()
            records.append(record)
    assert len(records) == count, f"read {len(records)} of {count} input records"
    return records


def test_committed_outputs_and_offsets_are_visible_and_aborted_ones_are_not(
    kafka_bootstrap: str, hub: str
) -> None:
    source = create_topic(kafka_bootstrap, f"{hub}.in", partitions=1)
    sink = create_topic(kafka_bootstrap, f"{hub}.out", partitions=3)
    group = f"{hub}-processor"

    plain = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for i in range(5):
        plain.produce(source, key=f"k{i}".encode(), value=f"in-{i}".encode(), partition=0)
    assert plain.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"{hub}-txn",
            # Short, so a test dying mid-transaction does not block readers for long.
            "transaction.timeout.ms": 10_000,
        }
    )
    try:
        consumer.subscribe([source])
        producer.init_transactions(30)

        def transform(records: list[Message], tag: str) -> None:
            for record in records:
                key = record.key()
                assert key is not None
                producer.produce(
                    sink,
                    key=key,
                    value=f"{tag}:{(record.value() or b'').decode()}".encode(),
                    partition=partition_for(key, 3),
                )
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)

        # Transaction 1: three inputs -> three outputs + offset 3, committed.
        producer.begin_transaction()
        transform(_consume(consumer, 3), "ok")
        producer.commit_transaction(30)

        # Transaction 2: the other two inputs, aborted: neither outputs nor offset 5 count.
        producer.begin_transaction()
        transform(_consume(consumer, 2), "aborted")
        assert producer.flush(30) == 0  # the aborted records really reach the log
        producer.abort_transaction(30)

        # Transaction 3: a committed marker after the aborted ones.
        producer.begin_transaction()
        producer.produce(sink, key=b"end", value=b"end", partition=partition_for(b"end", 3))
        producer.commit_transaction(30)

        committed = consumer.committed([TopicPartition(source, 0)], timeout=10)
        assert [(tp.topic, tp.partition, tp.offset) for tp in committed] == [(source, 0, 3)]
    finally:
        consumer.close()

    expected = {"ok:in-0", "ok:in-1", "ok:in-2", "end"}
    seen = values(
        consume_until(kafka_bootstrap, sink, lambda rs: len(rs) >= len(expected), settle=1.0)
    )
    assert len(seen) == len(expected) and set(seen) == expected

    # The aborted records are in the log: only read_committed hides them.
    raw = values(
        consume_until(
            kafka_bootstrap, sink, lambda rs: len(rs) >= 6, isolation_level="read_uncommitted"
        )
    )
    assert {"aborted:in-3", "aborted:in-4"} <= set(raw)

    # Each output went to the partition partition_for chose.
    for record in consume_until(kafka_bootstrap, sink, lambda rs: len(rs) >= len(expected)):
        key = record.key()
        assert key is not None and record.partition() == partition_for(key, 3)


def test_a_new_producer_with_the_same_transactional_id_fences_the_old_one(
    kafka_bootstrap: str, hub: str
) -> None:
    sink = create_topic(kafka_bootstrap, f"{hub}.out")
    config = {
        "bootstrap.servers": kafka_bootstrap,
        "transactional.id": f"{hub}-{uuid.uuid4().hex[:6]}",
        "transaction.timeout.ms": 10_000,
    }
    old = Producer(config)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(sink, value=b"zombie", partition=0)
    assert old.flush(30) == 0

    new = Producer(config)
    new.init_transactions(30)  # bumps the epoch and aborts the old open transaction
    new.begin_transaction()
    new.produce(sink, value=b"live", partition=0)
    new.commit_transaction(30)

    try:
        old.commit_transaction(10)
    except Exception as exc:  # KafkaException: fenced
        assert "fenc" in str(exc).lower(), exc
    else:
        raise AssertionError("the fenced producer could commit")

    seen = values(consume_until(kafka_bootstrap, sink, lambda rs: len(rs) >= 1, settle=1.0))
    assert seen == ["live"]
