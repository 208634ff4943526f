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
``loop.call_soon_threadsafe`` by whichever thread applied the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from durafka.codec.records import decode_status
from durafka.errors import DurafkaError, TransportError, WaitTimeoutError
from durafka.status import OrchestrationStatus
from durafka.transport.base import Consumer, TopicPartition, Transport

__all__ = ["AioKafkaStatusFeeder", "FeedTarget", "Predicate", "StatusView", "ThreadStatusFeeder"]

log = logging.getLogger(__name__)

Predicate = Callable[[OrchestrationStatus], bool]
"""A condition on an instance's status, e.g. ``lambda s: s.is_terminal``."""

_READY = "<ready>"  # waiter key of wait-for-ready futures (no instance id looks like it)


class FeedTarget(Protocol):
    """What a feeder needs of the view it feeds (:class:`StatusView`, or the entity view)."""

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None: ...
    def mark_ready(self) -> None: ...
    def fail(self, error: DurafkaError) -> None: ...
    def __len__(self) -> int: ...


@dataclass(eq=False, slots=True)
class _AsyncWaiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    predicate: Predicate | None = field(default=None)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _schedule(
    waiter: _AsyncWaiter, fn: Callable[[asyncio.Future[Any], Any], None], arg: Any
) -> None:
    # The waiter's loop may have closed while it waited (its task is gone): nothing to wake.
    with contextlib.suppress(RuntimeError):
        waiter.loop.call_soon_threadsafe(fn, waiter.future, arg)


class StatusView:
    """The latest status of every instance, fed from ``H.status`` by a feeder.

    Thread-safe: feeders apply batches from their thread or task while any
    number of threads and event loops read and wait.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._statuses: dict[str, OrchestrationStatus] = {}
        self._waiters: dict[str, list[_AsyncWaiter]] = {}
        self._ready = False
        self._error: DurafkaError | None = None

    # -- feeding -------------------------------------------------------------------

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Apply ``(key, value)`` records of ``H.status`` in topic order.

        A ``None`` value removes the instance (purged). Records that cannot be
        decoded are logged and skipped: one bad record must not stop the view.
        """
        updates: list[tuple[str, OrchestrationStatus | None]] = []
        for key, value in records:
            if key is None:
                log.warning("skipping a status record without a key (not written by durafka)")
                continue
            try:
                instance_id = key.decode()
                status = None if value is None else decode_status(value)
            except Exception as exc:  # any writer's garbage: fastavro raises many kinds
                log.warning("skipping an undecodable status record (key %r): %s", key, exc)
                continue
            updates.append((instance_id, status))
        if not updates:
            return
        with self._cond:
            for instance_id, status in updates:
                if status is None:
                    self._statuses.pop(instance_id, None)
                    continue
                self._statuses[instance_id] = status
                if instance_id in self._waiters:
                    self._wake(instance_id, status)
            self._cond.notify_all()

    def _wake(self, instance_id: str, status: OrchestrationStatus) -> None:
        """Resolve the async waiters on ``instance_id`` whose predicate holds (lock held)."""
        keep: list[_AsyncWaiter] = []
        for waiter in self._waiters[instance_id]:
            assert waiter.predicate is not None
            try:
                matched = waiter.predicate(status)
            except Exception as exc:  # the waiter's own bug: surface it to the waiter
                _schedule(waiter, _reject, exc)
                continue
            if matched:
                _schedule(waiter, _resolve, status)
            else:
                keep.append(waiter)
        if keep:
            self._waiters[instance_id] = keep
        else:
            del self._waiters[instance_id]

    def mark_ready(self) -> None:
        """Called by the feeder once it has caught up with the start-time high watermarks."""
        with self._cond:
            if self._ready:
                return
            self._ready = True
            for waiter in self._waiters.pop(_READY, []):
                _schedule(waiter, _resolve, None)
            self._cond.notify_all()

    def fail(self, error: DurafkaError) -> None:
        """Stop the view: every current and future wait raises ``error``.

        Called by the feeder when it cannot go on, and by the client on close.
        The statuses already seen stay readable through :meth:`get`.
        """
        with self._cond:
            if self._error is not None:
                return
            self._error = error
            for waiters in self._waiters.values():
                for waiter in waiters:
                    _schedule(waiter, _reject, error)
            self._waiters.clear()
            self._cond.notify_all()

    # -- reading -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the view has caught up with ``H.status`` as of its start."""
        return self._ready

    def get(self, instance_id: str) -> OrchestrationStatus | None:
        """The latest status of ``instance_id``, or ``None`` if unknown or purged."""
        with self._cond:
            return self._statuses.get(instance_id)

    def all(self) -> list[OrchestrationStatus]:
        """A snapshot of every known status (unordered)."""
        with self._cond:
            return list(self._statuses.values())

    def __len__(self) -> int:
        with self._cond:
            return len(self._statuses)

    # -- waiting -------------------------------------------------------------------

    def wait_ready(self, timeout: float | None) -> None:
        """Block until the view is ready.

        Raises:
            WaitTimeoutError: not caught up within ``timeout`` seconds.
            DurafkaError: the feeder failed (the view's error).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                self._raise_error()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(_not_ready_message(timeout))
                self._cond.wait(remaining)

    async def wait_ready_async(self, timeout: float | None) -> None:
        """:meth:`wait_ready` for asyncio."""
        with self._cond:
            if self._ready:
                return
            self._raise_error()
            waiter = self._add_waiter(_READY, None)
        await self._await(waiter, _READY, timeout, lambda: _not_ready_message(timeout))

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
                current = self._statuses.get(instance_id)
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
            current = self._statuses.get(instance_id)
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

    def _add_waiter(self, key: str, predicate: Predicate | None) -> _AsyncWaiter:
        loop = asyncio.get_running_loop()
        waiter = _AsyncWaiter(loop, loop.create_future(), predicate)
        self._waiters.setdefault(key, []).append(waiter)
        return waiter

    async def _await(
        self, waiter: _AsyncWaiter, key: str, timeout: float | None, message: Callable[[], str]
    ) -> Any:
        try:
            if timeout is None:
                return await waiter.future  # no task per wait (asyncio.wait makes one)
            done, _ = await asyncio.wait((waiter.future,), timeout=timeout)
            if not done:
                raise WaitTimeoutError(message())
            return waiter.future.result()
        finally:
            with self._cond:
                waiters = self._waiters.get(key)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[key]
            waiter.future.cancel()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


def _timeout_message(
    instance_id: str, what: str, timeout: float | None, last: OrchestrationStatus | None
) -> str:
    seen = (
        f"last status seen: {last.runtime_status.value}"
        if last is not None
        else "no status was seen for it (is a processor running, and is the id right?)"
    )
    return f"instance {instance_id!r} did not reach {what} within {timeout}s; {seen}"


def _not_ready_message(timeout: float | None) -> str:
    return (
        f"the status view did not catch up with the status topic within {timeout}s; "
        "is the broker reachable and the topic readable?"
    )


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
