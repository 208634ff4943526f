"""Helpers of the feature tests: reading a hub's topics, summarising histories."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from durafka.client import Client
from durafka.codec.records import decode_status
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport.base import TopicPartition, Transport

T = TypeVar("T")


def read_topic(
    transport: Transport, topic: str, timeout: float = 30.0
) -> list[tuple[bytes | None, bytes | None]]:
    """Every committed ``(key, value)`` of ``topic``, up to the high watermarks of now."""
    consumer = transport.consumer(None)
    try:
        tps = [TopicPartition(topic, p) for p in range(transport.partition_count(topic))]
        highs = {tp: consumer.watermarks(tp)[1] for tp in tps}
        consumer.assign({tp: consumer.watermarks(tp)[0] for tp in tps})
        out: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < high for tp, high in highs.items()):
            out.extend((r.key(), r.value()) for r in consumer.poll_batch(1000, 0.2))
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout}s"
        return out
    finally:
        consumer.close()


def status_records(
    transport: Transport, hub: str, instance_id: str
) -> list[OrchestrationStatus | None]:
    """Every status record of ``instance_id`` on ``H.status`` (``None``: a tombstone)."""
    key = instance_id.encode()
    return [
        None if value is None else decode_status(value)
        for k, value in read_topic(transport, HubTopics(hub).status)
        if k == key
    ]


def kinds(history: Iterable[HistoryEvent]) -> list[EventKind]:
    """The kinds of ``history`` without the ORCHESTRATOR_STARTED step markers."""
    return [e.kind for e in history if e.kind is not EventKind.ORCHESTRATOR_STARTED]


def count(history: Iterable[HistoryEvent], kind: EventKind) -> int:
    """How many events of ``kind`` ``history`` holds."""
    return sum(1 for e in history if e.kind is kind)


def wait_processed(transport: Transport, hub: str, timeout: float = 30.0) -> None:
    """Wait until the processors committed every record now on ``H.orchestrations``.

    Reads the committed offsets of the group ``<hub>.processors`` without joining it.
    """
    topic = HubTopics(hub).orchestrations
    consumer = transport.consumer(f"{hub}.processors")
    try:
        tps = [TopicPartition(topic, p) for p in range(transport.partition_count(topic))]
        highs = {tp: consumer.watermarks(tp)[1] for tp in tps}
        deadline = time.monotonic() + timeout
        while True:
            committed = consumer.committed(tps)
            behind = {tp: h for tp, h in highs.items() if (committed[tp] or 0) < h}
            if not behind:
                return
            assert time.monotonic() < deadline, f"records not processed in {timeout}s: {behind}"
            time.sleep(0.02)
    finally:
        consumer.close()


async def wait_until_async(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, what: str = ""
) -> T:
    """Await ``probe()`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"timed out after {timeout}s waiting for {what or probe}"
        )
        await asyncio.sleep(0.005)


def has_status(client: Client, instance_id: str, status: RuntimeStatus) -> bool:
    """Whether the client's view shows ``instance_id`` in ``status`` (for ``wait_until``)."""
    current = client.get_status(instance_id)
    return current is not None and current.runtime_status is status
