"""Reading a compacted topic (``H.status``, ``H.entities``) into a view, on a thread.

A feeder reads every partition of the topic from the beginning and hands
batches to its :class:`~durafka.transport.base.FeedTarget`; it marks the target
*ready* once it reaches the high watermarks captured when it started, i.e.
once the view shows everything published before the client came up.
:class:`ThreadFeeder` runs any transport's consumer on a daemon thread (the sync
client on both transports, the asyncio client on ``memory://``); the asyncio
client on Kafka uses :class:`~durafka.transport.aiokafka.AioKafkaFeeder`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from durafka.errors import ClusterConnectionError, DurafkaError, TransportError
from durafka.transport.base import Consumer, FeedTarget, TopicPartition, Transport

__all__ = ["MAX_RECORDS", "ThreadFeeder", "feeder_error"]

log = logging.getLogger(__name__)

#: Records per poll: large enough to load a big status topic fast at start-up.
MAX_RECORDS = 1000
#: How long the feeder retries assigning the partitions of a just-created topic.
_SETUP_DEADLINE = 30.0
_SETUP_RETRY_INTERVAL = 0.1


class ThreadFeeder:
    """Feeds a view from a compacted topic with a transport consumer in a daemon thread.

    The consumer has no group: it ``assign()``s every partition of the topic
    from the beginning, so each client sees every instance (or entity).

    Args:
        view: the view to feed.
        transport: creates the consumer and tells the partition count.
        topic: the compacted topic (``H.status``, ``H.entities``).
        poll_timeout: seconds each poll waits at most for a first record; it
            bounds how long :meth:`stop` takes, not how late a record is seen
            (a poll returns as soon as a record arrives).
        consumer_config: extra consumer settings for the transport.
    """

    def __init__(
        self,
        view: FeedTarget,
        transport: Transport,
        topic: str,
        *,
        poll_timeout: float = 0.1,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self._view = view
        self._transport = transport
        self._topic = topic
        self._poll_timeout = poll_timeout
        self._consumer_config = consumer_config or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"durafka-status-{topic}", daemon=True
        )

    def start(self) -> None:
        """Start reading in the background."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading and close the consumer (waits for the thread)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            consumer = self._transport.consumer(group_id=None, **self._consumer_config)
        except Exception as exc:
            self._fail(exc)
            return
        try:
            self._feed(consumer)
        except Exception as exc:
            self._fail(exc)
        finally:
            try:
                consumer.close()
            except Exception:
                log.exception("closing the status consumer of %s failed", self._topic)

    def _feed(self, consumer: Consumer) -> None:
        count = self._transport.partition_count(self._topic)
        partitions = [TopicPartition(self._topic, p) for p in range(count)]
        behind = self._assign(consumer, partitions)
        if not behind:
            self._view.mark_ready()
        while not self._stop.is_set():
            # Wait for one record, then drain without waiting: librdkafka's batch
            # consume waits out its whole timeout unless the batch fills up.
            records = consumer.poll_batch(1, self._poll_timeout)
            if records:
                records += consumer.poll_batch(MAX_RECORDS, 0)
                self._view.apply((r.key(), r.value()) for r in records)
            if behind:
                for tp in [tp for tp, high in behind.items() if consumer.position(tp) >= high]:
                    del behind[tp]
                if not behind:
                    log.debug(
                        "status view of %s is ready (%d instances)", self._topic, len(self._view)
                    )
                    self._view.mark_ready()

    def _assign(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Assign every partition from the beginning; the start-time high watermarks.

        Caught up means every partition's *position* reaches its high watermark
        (not the last record's offset + 1: transaction markers take offsets).
        Retried within a deadline: right after a topic is created, the broker
        may not lead its partitions yet (NOT_LEADER_FOR_PARTITION).
        """
        deadline = time.monotonic() + _SETUP_DEADLINE
        while True:
            try:
                consumer.assign(dict.fromkeys(partitions))
                behind: dict[TopicPartition, int] = {}
                for tp in partitions:
                    low, high = consumer.watermarks(tp)
                    if high > low:
                        behind[tp] = high
                return behind
            except TransportError as exc:
                if self._stop.is_set() or time.monotonic() >= deadline:
                    raise
                log.info("status view of %s not assignable yet, retrying: %s", self._topic, exc)
                self._stop.wait(_SETUP_RETRY_INTERVAL)

    def _fail(self, exc: Exception) -> None:
        if self._stop.is_set():
            return  # failing while shutting down is not news
        log.error("the status feeder of %s stopped: %s", self._topic, exc, exc_info=exc)
        self._view.fail(feeder_error(self._topic, exc))


def feeder_error(topic: str, exc: Exception) -> DurafkaError:
    """The error a view fails with when its feeder of ``topic`` stops on ``exc``."""
    if isinstance(exc, ClusterConnectionError):
        return exc  # it says why the cluster cannot be reached; that is the whole story
    error = TransportError(f"the status view stopped reading {topic}: {exc}")
    error.__cause__ = exc
    return error
