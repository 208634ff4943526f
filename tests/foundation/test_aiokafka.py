"""aiokafka (the asyncio client) against the same broker, transactions included.

aiokafka reads uncommitted data by default; every consumer here says
``isolation_level`` explicitly.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from durafka.partitioning import partition_for
from tests.support.kafka import create_topic


async def _read(
    bootstrap: str, topic: str, count: int, isolation_level: str, settle: float = 0.0
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                records += [r for batch in batches.values() for r in batch]
        # Anything more that arrives now is a record that should not exist.
        for batch in (await consumer.getmany(timeout_ms=int(settle * 1000))).values():
            records += batch
    finally:
        await consumer.stop()
    return records


async def test_produce_and_consume(kafka_bootstrap: str, hub: str) -> None:
    topic = create_topic(kafka_bootstrap, f"{hub}.plain", partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            key = f"key-{i}".encode()
            await producer.send_and_wait(
                topic, value=f"v{i}".encode(), key=key, partition=partition_for(key, 3)
            )
    finally:
        await producer.stop()

    records = await _read(kafka_bootstrap, topic, 10, "read_committed")
    assert sorted(r.value for r in records if r.value) == sorted(
        f"v{i}".encode() for i in range(10)
    )
    assert all(r.key and r.partition == partition_for(r.key, 3) for r in records)


async def test_transactional_produce_committed_visible_aborted_invisible(
    kafka_bootstrap: str, hub: str
) -> None:
    topic = create_topic(kafka_bootstrap, f"{hub}.txn")
    source = create_topic(kafka_bootstrap, f"{hub}.source")
    group = f"{hub}-group"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        transactional_id=f"{hub}-aio",
        transaction_timeout_ms=10_000,
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1", partition=0)
            await producer.send(topic, b"committed-2", partition=0)
            await producer.send_offsets_to_transaction({TopicPartition(source, 0): 7}, group)

        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", partition=0)
        await producer.send_offsets_to_transaction({TopicPartition(source, 0): 9}, group)
        await producer.abort_transaction()

        async with producer.transaction():
            await producer.send(topic, b"committed-3", partition=0)
    finally:
        await producer.stop()

    committed = await _read(kafka_bootstrap, topic, 3, "read_committed", settle=1.0)
    assert [r.value for r in committed] == [b"committed-1", b"committed-2", b"committed-3"]

    uncommitted = await _read(kafka_bootstrap, topic, 4, "read_uncommitted")
    assert b"aborted" in [r.value for r in uncommitted]

    # The offset sent in the committed transaction counts; the aborted one does not.
    offsets = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await offsets.start()
    try:
        assert await offsets.committed(TopicPartition(source, 0)) == 7
    finally:
        await offsets.stop()
