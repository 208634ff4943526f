"""The asyncio client: aiokafka on the real broker, the memory transport on memory://."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from durafka.client import AsyncClient
from durafka.codec.records import decode_message
from durafka.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    OrchestrationFailed,
    PayloadTooLargeError,
    WaitTimeoutError,
)
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.status import RuntimeStatus
from durafka.transport.aiokafka import AioKafkaTransport
from durafka.transport.threaded import ThreadedAsyncTransport
from tests.client.conftest import PARTITIONS, Hub, status


async def double(ctx: Any, n: int) -> int:  # never run: only registered
    raise NotImplementedError


@pytest.fixture
async def client(env: Hub) -> AsyncIterator[AsyncClient]:
    registry = Registry()
    registry.add_orchestration(double)
    # No transport passed: the client picks aiokafka on Kafka, the memory transport on memory://.
    async with AsyncClient(env.settings, registry) as c:
        yield c


async def test_it_uses_aiokafka_on_kafka_and_the_transport_on_memory(
    env: Hub, client: AsyncClient
) -> None:
    expected = AioKafkaTransport if env.kind == "kafka" else ThreadedAsyncTransport
    assert isinstance(client._transport, expected)


async def test_start_new_writes_a_durable_start_record(env: Hub, client: AsyncClient) -> None:
    iid = await client.start_new(double, 21, instance_id="d-1")
    records = await asyncio.to_thread(env.read_orchestrations, 1)
    [record] = records
    target, event = decode_message(record.value() or b"")
    assert (iid, target, record.key()) == ("d-1", "d-1", b"d-1")
    assert record.partition() == partition_for(b"d-1", PARTITIONS)
    assert (event.kind, event.name, event.payload) == (EventKind.EXECUTION_STARTED, "double", b"21")


async def test_payload_too_large_writes_nothing(env: Hub) -> None:
    async with AsyncClient(env.settings_with(max_payload_bytes=10)) as client:
        with pytest.raises(PayloadTooLargeError):
            await client.start_new("big", "x" * 20)
    assert await asyncio.to_thread(env.orchestrations_written) == 0


async def test_duplicate_start_and_unknown_event_target_are_rejected(
    env: Hub, client: AsyncClient
) -> None:
    await asyncio.to_thread(env.publish, status("taken", RuntimeStatus.PENDING))
    await client.status_view.wait_for_async("taken", lambda s: True, 10)
    with pytest.raises(InstanceAlreadyExistsError, match=r"'taken'.*PENDING"):
        await client.start_new(double, 1, instance_id="taken")
    with pytest.raises(InstanceNotFoundError, match="'nope'"):
        await client.raise_event("nope", "e")
    assert await asyncio.to_thread(env.orchestrations_written) == 0


async def test_wait_for_completion_wakes_on_a_later_status(env: Hub, client: AsyncClient) -> None:
    waiter = asyncio.create_task(client.wait_for_completion("calc", timeout=10))
    await asyncio.to_thread(env.publish, status("calc", RuntimeStatus.RUNNING, name="double"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await asyncio.to_thread(
        env.publish, status("calc", RuntimeStatus.COMPLETED, name="double", output=b"42")
    )
    published = time.monotonic()
    assert await asyncio.wait_for(waiter, 10) == 42
    assert time.monotonic() - published < 0.1


async def test_failure_and_timeout(env: Hub, client: AsyncClient) -> None:
    await asyncio.to_thread(env.publish, status("t", RuntimeStatus.TERMINATED, output=b'"stop"'))
    with pytest.raises(OrchestrationFailed, match="TERMINATED: stop"):
        await client.wait_for_completion("t", timeout=10)
    await asyncio.to_thread(env.publish, status("r", RuntimeStatus.RUNNING))
    await client.status_view.wait_for_async("r", lambda s: True, 10)
    with pytest.raises(WaitTimeoutError, match=r"'r'.*RUNNING"):
        await client.wait_for_status("r", timeout=0.1)


async def test_status_listing_and_control_events(env: Hub, client: AsyncClient) -> None:
    await asyncio.to_thread(
        env.publish,
        status("b", RuntimeStatus.RUNNING, created_at_ms=2),
        status("a", RuntimeStatus.RUNNING, created_at_ms=1),
    )
    await client.status_view.wait_for_async("a", lambda s: True, 10)
    await client.status_view.wait_for_async("b", lambda s: True, 10)
    found = await client.get_status("a")
    assert found is not None and found.runtime_status is RuntimeStatus.RUNNING
    page = await client.list_instances(status=RuntimeStatus.RUNNING)
    assert [s.instance_id for s in page.items] == ["a", "b"] and page.continuation is None
    await client.suspend("a", "pause")
    await client.resume("a")
    await client.raise_event("a", "go", [1])
    await client.terminate("a")
    records = await asyncio.to_thread(env.read_orchestrations, 4)
    assert [decode_message(r.value() or b"")[1].kind for r in records] == [
        EventKind.EXECUTION_SUSPENDED,
        EventKind.EXECUTION_RESUMED,
        EventKind.EVENT_RAISED,
        EventKind.EXECUTION_TERMINATED,
    ]


async def test_close_is_idempotent_and_fails_waiters(env: Hub) -> None:
    client = AsyncClient(env.settings)
    await client.start()
    waiter = asyncio.create_task(client.wait_for_status("x", timeout=30))
    await asyncio.sleep(0.05)
    await client.close()
    await client.close()
    with pytest.raises(Exception, match="closed"):
        await asyncio.wait_for(waiter, 5)


@pytest.mark.kafka
async def test_a_given_kafka_transport_acknowledges_every_start(kafka_env: Hub) -> None:
    # confluent-kafka's producer with the delivery thread settling the futures in batches.
    registry = Registry()
    registry.add_orchestration(double)
    async with AsyncClient(kafka_env.settings, registry, kafka_env.transport) as client:
        assert isinstance(client._transport, ThreadedAsyncTransport)
        ids = await asyncio.gather(
            *(client.start_new(double, n, instance_id=f"k-{n}") for n in range(200))
        )
    assert ids == [f"k-{n}" for n in range(200)]
    records = await asyncio.to_thread(kafka_env.read_orchestrations, 200)
    starts = {decode_message(r.value() or b"")[0] for r in records}
    assert starts == set(ids)
