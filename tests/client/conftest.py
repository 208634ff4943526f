"""Fixtures of the client tests: a task hub on memory:// or on the real broker.

Statuses are written by the tests themselves (the processor is not involved):
:meth:`Hub.publish` puts an ``InstanceStatus`` record (or a tombstone) into
``H.status`` at the instance's partition, as the processor would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from durafka.codec.records import encode_status
from durafka.partitioning import partition_for
from durafka.settings import Settings
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics, load_hub_spec
from durafka.transport.base import Record, TopicPartition, Transport
from durafka.transport.factory import open_transport
from durafka.transport.memory import MemoryBroker

PARTITIONS = 4


def status(
    instance_id: str,
    runtime_status: RuntimeStatus = RuntimeStatus.RUNNING,
    *,
    name: str = "greet",
    created_at_ms: int = 1_700_000_000_000,
    output: bytes | None = None,
    **fields: Any,
) -> OrchestrationStatus:
    """A status record as the processor would publish it."""
    return OrchestrationStatus(
        instance_id=instance_id,
        name=name,
        runtime_status=runtime_status,
        serialized_input=fields.pop("serialized_input", b'"in"'),
        serialized_output=output,
        failure_details=fields.pop("failure_details", None),
        serialized_custom_status=None,
        created_at_ms=created_at_ms,
        last_updated_at_ms=created_at_ms + 1,
        **fields,
    )


@dataclass
class Hub:
    """A task hub with its orchestrations and status topics, and ways to feed/inspect them."""

    kind: str
    settings: Settings
    transport: Transport

    @property
    def topics(self) -> HubTopics:
        return HubTopics(self.settings.task_hub)

    def settings_with(self, **changes: Any) -> Settings:
        return self.settings.model_copy(update=changes)

    def publish(self, *items: OrchestrationStatus | str, transactional: bool = False) -> None:
        """Write statuses (a bare id writes a tombstone) to ``H.status``, in order."""
        topic = self.topics.status
        if transactional:
            producer: Any = self.transport.transactional_producer(f"test-{uuid.uuid4().hex}")
            producer.init_transactions()
            producer.begin_transaction()
        else:
            producer = self.transport.producer()
        try:
            for item in items:
                iid = item if isinstance(item, str) else item.instance_id
                value = None if isinstance(item, str) else encode_status(item)
                key = iid.encode()
                producer.produce(topic, partition_for(key, PARTITIONS), key, value)
            if transactional:
                producer.commit_transaction()
            else:
                assert producer.flush(10) == 0
        finally:
            producer.close()

    def publish_raw(self, key: bytes, value: bytes | None) -> None:
        producer = self.transport.producer()
        producer.produce(self.topics.status, partition_for(key, PARTITIONS), key, value)
        assert producer.flush(10) == 0
        producer.close()

    def read_orchestrations(self, count: int, timeout: float = 10.0) -> list[Record]:
        """Every record of ``H.orchestrations`` once ``count`` have arrived (or the timeout)."""
        consumer = self.transport.consumer(group_id=None)
        topic = self.topics.orchestrations
        consumer.assign({TopicPartition(topic, p): None for p in range(PARTITIONS)})
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        try:
            while len(records) < count and time.monotonic() < deadline:
                records += consumer.poll_batch(100, 0.1)
        finally:
            consumer.close()
        return records

    def orchestrations_written(self) -> int:
        """How many offsets ``H.orchestrations`` has used (0: nothing ever written)."""
        consumer = self.transport.consumer(group_id=None)
        topic = self.topics.orchestrations
        try:
            return sum(consumer.watermarks(TopicPartition(topic, p))[1] for p in range(PARTITIONS))
        finally:
            consumer.close()


def _create_topics(transport: Transport, hub: str) -> None:
    wanted = {HubTopics(hub).orchestrations, HubTopics(hub).status}
    transport.ensure_topics(
        [s for s in load_hub_spec(hub, partitions=PARTITIONS) if s.name in wanted]
    )


def _hub(kind: str, bootstrap: str, hub: str) -> Hub:
    settings = Settings(bootstrap_servers=bootstrap, task_hub=hub, partitions=PARTITIONS)
    transport = open_transport(bootstrap)
    _create_topics(transport, hub)
    return Hub(kind, settings, transport)


@pytest.fixture
def memory_env(hub: str) -> Iterator[Hub]:
    """A fresh hub on a private memory:// broker."""
    name = f"client-{uuid.uuid4().hex[:8]}"
    env = _hub("memory", f"memory://{name}", hub)
    yield env
    env.transport.close()
    MemoryBroker.reset(name)


@pytest.fixture
def kafka_env(kafka_bootstrap: str, hub: str) -> Iterator[Hub]:
    """A fresh hub on the real Kafka broker."""
    env = _hub("kafka", kafka_bootstrap, hub)
    yield env
    env.transport.close()


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def env(request: pytest.FixtureRequest) -> Hub:
    """The same test on a fresh memory:// hub and on a fresh hub of the real broker."""
    env: Hub = request.getfixturevalue(f"{request.param}_env")
    return env
