"""The status view: ``H.status`` materialised into a dict, with waiters.

``H.status`` is compacted and keyed by instance id, so reading it from the
beginning yields the latest status of every instance; a ``None`` value (a
tombstone) means the instance was purged. A feeder reads the topic in the
background and hands batches to :meth:`StatusView.apply`; clients read and
wait on the view (CQRS: the same topic feeds dashboards and analytics).

Two feeders exist because the asyncio client on Kafka must not block its event
loop: :class:`ThreadStatusFeeder` runs any :class:`~durafka.transport.base.Consumer`
in a daemon thread (sync client on both transports, async client on
``memory://``), :class:`AioKafkaStatusFeeder` is an aiokafka task on the
client's loop. Both mark the view *ready* once they reach the high watermarks
captured when they started, i.e. once the view shows everything that was
published before the client came up.

Waiting never polls: sync waiters sleep on a ``threading.Condition`` that every
applied batch notifies; async waiters are futures resolved through
``loop.call_soon_threadsafe`` by whichever thread applied the record (the
machinery is :class:`~durafka.client.compacted_view.CompactedView`'s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from durafka.client.compacted_view import CompactedView
from durafka.codec.records import decode_status
from durafka.errors import DurafkaError, TransportError, WaitTimeoutError
from durafka.status import OrchestrationStatus
from durafka.transport.base import Consumer, TopicPartition, Transport

__all__ = ["AioKafkaStatusFeeder", "FeedTarget", "Predicate", "StatusView", "ThreadStatusFeeder"]

log = logging.getLogger(__name__)

Predicate = Callable[[OrchestrationStatus], bool]
"""A condition on an instance's status, e.g. ``lambda s: s.is_terminal``."""


class FeedTarget(Protocol):
    """What a feeder needs of the view it feeds (:class:`StatusView`, or the entity view)."""

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None: ...
    def mark_ready(self) -> None: ...
    def fail(self, error: DurafkaError) -> None: ...
    def __len__(self) -> int: ...


class StatusView(CompactedView[OrchestrationStatus]):
    """The latest status of every instance, fed from ``H.status`` by a feeder.

    Thread-safe: feeders apply batches from their thread or task while any
    number of threads and event loops read and wait.
    """

    _record_noun = "status"
    _topic_noun = "status"
    _log = log

    def _decode(self, value: bytes) -> OrchestrationStatus:
        return decode_status(value)

    def get(self, instance_id: str) -> OrchestrationStatus | None:
        """The latest status of ``instance_id``, or ``None`` if unknown or purged."""
        return self._get(instance_id)

    def all(self) -> list[OrchestrationStatus]:
        """A snapshot of every known status (unordered)."""
        return self._all()

    def wait_for(
        self,
        instance_id: str,
        predicate: Predicate,
        timeout: float | None,
        *,
        what: str = "the awaited status",
    ) -> OrchestrationStatus:
        """Block until the status of ``instance_id`` satisfies ``predicate``.

        Args:
            instance_id: the instance.
            predicate: evaluated on the current status and on every new one.
            timeout: seconds to wait at most; ``None`` waits forever.
            what: names the awaited condition in the timeout message.

        Returns:
            The first status that satisfied ``predicate``.

        Raises:
            WaitTimeoutError: the deadline passed; names the id and the last status seen.
            DurafkaError: the feeder failed or the view was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                current = self._values.get(instance_id)
                if current is not None and predicate(current):
                    return current
                self._raise_error()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(_timeout_message(instance_id, what, timeout, current))
                self._cond.wait(remaining)

    async def wait_for_async(
        self,
        instance_id: str,
        predicate: Predicate,
        timeout: float | None,
        *,
        what: str = "the awaited status",
    ) -> OrchestrationStatus:
        """:meth:`wait_for` for asyncio: the feeder resolves a future, nothing polls."""
        with self._cond:
            current = self._values.get(instance_id)
            if current is not None and predicate(current):
                return current
            self._raise_error()
            waiter = self._add_waiter(instance_id, predicate)
        result: OrchestrationStatus = await self._await(
            waiter,
            instance_id,
            timeout,
            lambda: _timeout_message(instance_id, what, timeout, self.get(instance_id)),
        )
        return result


def _timeout_message(
    instance_id: str, what: str, timeout: float | None, last: OrchestrationStatus | None
) -> str:
    seen = (
        f"last status seen: {last.runtime_status.value}"
        if last is not None
        else "no status was seen for it (is a processor running, and is the id right?)"
    )
    return f"instance {instance_id!r} did not reach {what} within {timeout}s; {seen}"


# -- feeders -----------------------------------------------------------------------------

#: Records per poll: large enough to load a big status topic fast at start-up.
_MAX_RECORDS = 1000
#: How long the feeder retries assigning the partitions of a just-created topic.
_SETUP_DEADLINE = 30.0
_SETUP_RETRY_INTERVAL = 0.1


class ThreadStatusFeeder:
    """Feeds a :class:`StatusView` from a transport consumer in a daemon thread.

    The consumer has no group: it ``assign()``s every partition of the status
    topic from the beginning, so each client sees every instance.

    Args:
        view: the view to feed.
        transport: creates the consumer and tells the partition count.
        topic: the ``H.status`` topic.
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
                records += consumer.poll_batch(_MAX_RECORDS, 0)
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
        self._view.fail(_feeder_error(self._topic, exc))


def _feeder_error(topic: str, exc: Exception) -> DurafkaError:
    error = TransportError(f"the status view stopped reading {topic}: {exc}")
    error.__cause__ = exc
    return error


class AioKafkaStatusFeeder:
    """Feeds a :class:`StatusView` from Kafka with an aiokafka consumer task.

    Used by the asyncio client on Kafka so no thread and no blocking call sits
    on its event loop. Reads ``read_committed``, with no group, every
    partition from the beginning.

    Args:
        view: the view to feed.
        topic: the ``H.status`` topic.
        partitions: its partition count.
        bootstrap_servers: the Kafka cluster.
        options: extra ``AIOKafkaConsumer`` arguments (security).
    """

    def __init__(
        self,
        view: FeedTarget,
        topic: str,
        partitions: int,
        bootstrap_servers: str,
        options: dict[str, Any] | None = None,
    ) -> None:
        self._view = view
        self._topic = topic
        self._partitions = partitions
        self._bootstrap = bootstrap_servers
        self._options = options or {}
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, assign the partitions and start the background task."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition as KafkaTopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # The broker answers a fetch as soon as a record is committed, or after
            # this long; low so a waiting client sees a new status within ms.
            fetch_max_wait_ms=10,
            **self._options,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            partitions = [KafkaTopicPartition(self._topic, p) for p in range(self._partitions)]
            consumer.assign(partitions)
            highs: dict[Any, int] = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            self._consumer = None
            raise
        self._task = asyncio.get_running_loop().create_task(
            self._run(consumer, highs), name=f"durafka-status-{self._topic}"
        )

    async def stop(self) -> None:
        """Cancel the task and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self, consumer: Any, highs: dict[Any, int]) -> None:
        behind = {tp: high for tp, high in highs.items() if high > 0}
        if not behind:
            self._view.mark_ready()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=_MAX_RECORDS)
                for records in batches.values():
                    self._view.apply((r.key, r.value) for r in records)
                if behind:
                    for tp in list(behind):
                        if await consumer.position(tp) >= behind[tp]:
                            del behind[tp]
                    if not behind:
                        self._view.mark_ready()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("the status feeder of %s stopped: %s", self._topic, exc, exc_info=exc)
            self._view.fail(_feeder_error(self._topic, exc))
