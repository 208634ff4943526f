"""The asyncio client's transport over any :class:`~durafka.transport.base.Transport`.

Used on ``memory://`` and when the asyncio client is given a transport. The
transport's producer writes (on Kafka a :class:`~durafka.transport.delivery.DeliveryPump`
thread settles the futures; in process nothing blocks, so records are
produced and flushed inline), and feeders run on threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from durafka.transport.base import FeedTarget, OutgoingRecord, Producer, Transport
from durafka.transport.delivery import DELIVERY_TIMEOUT, DeliveryPump, send_and_flush
from durafka.transport.feeder import ThreadFeeder
from durafka.transport.memory import MemoryTransport

__all__ = ["ThreadedAsyncTransport"]


class _StoppableFeeder:
    """A :class:`ThreadFeeder` stopped from asyncio code."""

    def __init__(self, feeder: ThreadFeeder) -> None:
        self._feeder = feeder

    async def stop(self) -> None:
        await asyncio.to_thread(self._feeder.stop)


class ThreadedAsyncTransport:
    """An :class:`~durafka.transport.base.AsyncTransport` made of a transport and threads.

    Args:
        transport: the transport to use.
        owns: close ``transport`` on :meth:`close` (it was opened for this client).
    """

    def __init__(self, transport: Transport, *, owns: bool) -> None:
        self.transport = transport
        self._owns = owns
        # In process, produce and flush never block, so no thread hop is needed
        # (it cost more than the rest of start_new together).
        self._inline = isinstance(transport, MemoryTransport)
        self._producer: Producer | None = None
        self._pump: DeliveryPump | None = None

    async def start(self) -> None:
        """Create the producer (and its delivery thread on Kafka)."""
        self._producer = self.transport.producer()
        if not self._inline:
            self._pump = DeliveryPump(self._producer, asyncio.get_running_loop())

    async def partition_count(self, topic: str) -> int:
        """The number of partitions of ``topic`` (asked in a thread)."""
        return await asyncio.to_thread(self.transport.partition_count, topic)

    async def send_all(self, records: Sequence[OutgoingRecord]) -> None:
        """Produce ``records``; return once each is acknowledged."""
        producer = self._producer
        assert producer is not None, "start() first"
        if self._pump is None:
            send_and_flush(producer, records)
        else:
            await self._pump.send_all(records)

    async def feed(self, target: FeedTarget, topic: str) -> _StoppableFeeder:
        """Start a feeder thread for ``topic``."""
        feeder = ThreadFeeder(target, self.transport, topic)
        feeder.start()
        return _StoppableFeeder(feeder)

    @contextmanager
    def sync_transport(self) -> Iterator[Transport]:
        """The transport itself (left open)."""
        yield self.transport

    async def close(self) -> None:
        """Flush and close the producer; close the transport if owned."""
        pump, self._pump = self._pump, None
        producer, self._producer = self._producer, None
        if pump is not None:
            pump.stop()
        try:
            if producer is not None:
                await asyncio.to_thread(producer.flush, DELIVERY_TIMEOUT)
                producer.close()
        finally:
            if self._owns:
                self.transport.close()
