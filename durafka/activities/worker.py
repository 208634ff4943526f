"""The activity worker: executes activity tasks from ``H.activities``.

A worker is one member of the consumer group ``H.workers``. It takes tasks
(bounded by ``max_concurrent_activities``), runs ``async def`` activities on one
asyncio event loop in a dedicated thread and plain ``def`` activities in a thread
pool, and reports each result as a ``TASK_COMPLETED`` / ``TASK_FAILED`` event
to the instance's partition of ``H.orchestrations``.

Delivery is at-least-once by design. Results are produced in Kafka transactions
(one per loop iteration, batching everything that completed meanwhile) together
with the consumer offsets of each partition's *contiguous completed prefix*: an
offset is committed only once every earlier task of that partition is done.
A result beyond the prefix is produced right away; if the worker dies before
the prefix catches up, the task runs again and the processor drops the
duplicate result by (instance, sequence id, attempt). Retries and timeouts are
not the worker's business: the orchestration schedules them with durable timers.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta

from durafka.activities.execute import failed_event, run_activity, run_activity_async
from durafka.activities.local import LocalActivities
from durafka.activities.pool import CallbackThreadPool, EventLoopThread
from durafka.codec.records import (
    ActivityTask,
    decode_activity_task,
    encode_message,
)
from durafka.deadletters import DeadLetters
from durafka.errors import (
    DecodeError,
    DurafkaError,
    InvalidInstanceIdError,
    RecordTooLargeError,
    TransactionError,
    UnknownFunctionError,
)
from durafka.ids import check_instance_id
from durafka.observability.metrics import WorkerMetrics
from durafka.observability.tracing import Tracing
from durafka.partitioning import partition_for
from durafka.registry import FunctionDef, Registry
from durafka.runtime.history import HistoryEvent
from durafka.settings import Settings
from durafka.topology import HubTopics
from durafka.transport.base import (
    Consumer,
    OutgoingRecord,
    Record,
    RecordHeaders,
    TopicPartition,
    TransactionalProducer,
    Transport,
)
from durafka.transport.client_config import for_client
from durafka.transport.limits import RecordLimits, record_size

__all__ = ["ActivityWorker"]

log = logging.getLogger("durafka.worker")

# Nothing in flight: only new records matter, and poll_batch returns on the first one.
# This bounds how long a stop request waits.
_IDLE_POLL_S = 0.1
# Work in flight and free slots: completions wake the loop at once (they are queued),
# new records are picked up within this delay.
_BUSY_WAIT_S = 0.002
# Every slot busy: partitions are paused, only completions (and callbacks) matter.
_FULL_WAIT_S = 0.05


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Track:
    """Offsets of one assigned partition taken since the last commit.

    A new track replaces the old one after a revocation or a rewind, so jobs
    started under an old track (which keep a reference to it) can tell that
    their offset no longer counts.
    """

    __slots__ = ("committed", "done", "pending")

    def __init__(self, first_offset: int) -> None:
        # Where to rewind after an aborted transaction: the first offset taken (the
        # group's committed offset or later, skipping only markers), then each commit.
        self.committed = first_offset
        self.pending: deque[int] = deque()
        self.done: set[int] = set()

    def take_prefix(self) -> int | None:
        """Drop the contiguous done prefix; the offset to commit if it moved, else None."""
        last: int | None = None
        pending, done = self.pending, self.done
        while pending and pending[0] in done:
            last = pending.popleft()
            done.discard(last)
        return None if last is None else last + 1


@dataclass(slots=True)
class _Job:
    """One activity task taken from a record."""

    tp: TopicPartition
    offset: int
    track: _Track
    task: ActivityTask
    fdef: FunctionDef
    started: float = 0.0
    headers: RecordHeaders = None  # only kept when tracing is on


class ActivityWorker:
    """Executes the activities of one task hub, as a member of the group ``H.workers``.

    Example:
        >>> worker = ActivityWorker(settings, registry, open_transport(settings.bootstrap))
        >>> stop = threading.Event()
        >>> threading.Thread(target=worker.run, args=(stop,)).start()
        >>> ...
        >>> stop.set()  # run() drains in-flight work, commits and returns

    Args:
        settings: task hub, ``max_concurrent_activities``, ``max_payload_bytes``,
            ``transaction_timeout_ms`` and ``client_config`` are used.
        registry: the activities this worker can run.
        transport: the cluster (or ``memory://`` broker) to work with.
        worker_id: names the ``transactional.id`` (``H.worker.<worker_id>``); a
            restarted worker with the same id fences its previous incarnation.
            A random id when omitted.
        drain_timeout: after ``stop`` is set, how long ``run`` waits for running
            activities before abandoning them (they then run again elsewhere).
        local_activities: the co-located processor's local pool: a task it handed
            off is adopted (its running execution awaited) instead of run again.

    Attributes:
        worker_id: this worker's id (given or random).
        group_id: the consumer group, ``H.workers``.
        transactional_id: the producer's ``transactional.id``, ``H.worker.<worker_id>``.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        transport: Transport,
        *,
        worker_id: str | None = None,
        drain_timeout: timedelta = timedelta(seconds=5),
        local_activities: LocalActivities | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._transport = transport
        self._topics = HubTopics(settings.task_hub)
        self.worker_id = worker_id or uuid.uuid4().hex
        self.group_id = f"{settings.task_hub}.workers"
        self.transactional_id = f"{settings.task_hub}.worker.{self.worker_id}"
        self._max_running = settings.max_concurrent_activities
        self._drain_timeout = drain_timeout.total_seconds()
        self._local = local_activities

        self._consumer: Consumer | None = None
        self._producer: TransactionalProducer | None = None
        self._pool: CallbackThreadPool | None = None
        self._loop_thread = EventLoopThread(f"durafka-activity-loop-{self.worker_id[:8]}")
        self._started = False
        self._closed = False

        self._orchestration_partitions = 0
        # The largest result record (H.orchestrations' record size limit); set by run.
        self._result_limit = 0
        #: Builds (and counts) this worker's dead letters (set when ``run`` starts).
        self.dead_letters: DeadLetters | None = None
        self._tracks: dict[TopicPartition, _Track] = {}
        self._owned: set[TopicPartition] = set()
        # Partitions revoked during the current poll (see _poll).
        self._revoked_in_poll: set[TopicPartition] = set()
        # Jobs taken while every slot was busy (e.g. from a partition assigned while
        # the others were paused): the concurrency bound holds no matter what polls return.
        self._backlog: deque[_Job] = deque()
        self._running = 0
        # A sync activity reports its event; adopted and async ones their future.
        self._completions: queue.SimpleQueue[tuple[_Job, HistoryEvent | Future[HistoryEvent]]] = (
            queue.SimpleQueue()
        )
        # What to produce in the next transaction.
        self._outbox: list[OutgoingRecord] = []
        self._paused = False
        self._repause = False
        self._unknown_names: set[str] = set()
        self._tracing = Tracing.for_settings(settings)
        #: This worker's Prometheus metrics, liveness and readiness.
        self.metrics = WorkerMetrics(
            transport,
            settings.client_config,
            group=self.group_id,
            topic=self._topics.activities,
            owned=self._owned,
            ready=lambda: self._consumer is not None and not self._closed,
            position=lambda tp: None if self._consumer is None else self._consumer.position(tp),
            running=lambda: self._running,
            dead_letters=lambda: self.dead_letters,
        )

    # -- lifecycle ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then drain and return (blocking).

        In-flight activities get ``drain_timeout`` to finish and have their results
        committed; activities still running then are abandoned (uncommitted, so they
        run again). Clients are closed on return.

        Raises:
            TransactionError: the producer was fenced (another worker with the same
                ``worker_id`` started) or failed fatally; nothing more can be committed.
            DurafkaError: the consumer failed fatally.
        """
        if self._started:
            raise DurafkaError("ActivityWorker.run() can be called once; create a new worker")
        self._started = True
        try:
            self._open()
            log.info(
                "worker %s started (group %s, max %d concurrent activities)",
                self.worker_id,
                self.group_id,
                self._max_running,
            )
            while not stop.is_set():
                self._step()
            self._drain()
        except TransactionError as exc:
            log.error(
                "worker %s stops: its transactional producer %s %s (%s); "
                "uncommitted activities will run again on the next owner of their partition",
                self.worker_id,
                self.transactional_id,
                "is fenced (another worker with the same id took over?) or failed fatally"
                if exc.fatal
                else "could not abort a failed transaction",
                exc,
            )
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Release the clients, the thread pool and the event loop (idempotent).

        ``run`` calls it on return; call it yourself only for a worker that never ran
        (it must not race a running ``run``). Sync activities still running cannot be
        interrupted: their threads finish in the background, their results discarded.
        """
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown()
        self._loop_thread.stop(join_timeout=2.0)
        # The consumer first: leaving the group promptly hands the partitions over.
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing must release the rest regardless
                    log.warning(
                        "closing a client of worker %s failed", self.worker_id, exc_info=True
                    )
        log.info("worker %s stopped", self.worker_id)

    def _open(self) -> None:
        config = self._settings.client_config
        self._orchestration_partitions = self._transport.partition_count(
            self._topics.orchestrations
        )
        limits = RecordLimits.for_hub(self._settings.task_hub, for_client(config, "producer"))
        self._result_limit = limits.of(self._topics.orchestrations)
        self.dead_letters = DeadLetters.for_settings(
            self._settings,
            self._transport.partition_count(self._topics.dead_letters),
            f"worker {self.worker_id}",
        )
        producer = self._transport.transactional_producer(
            self.transactional_id,
            **{
                **for_client(config, "producer"),
                "transaction.timeout.ms": str(self._settings.transaction_timeout_ms),
            },
        )
        self._producer = producer
        producer.init_transactions()
        consumer = self._transport.consumer(self.group_id, **for_client(config, "consumer"))
        self._consumer = consumer
        consumer.subscribe(
            [self._topics.activities], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    # -- the loop -------------------------------------------------------------------

    def _step(self) -> None:
        """One iteration: take records, collect completions, commit once."""
        consumer = self._consumer
        assert consumer is not None
        self._start_backlog()
        free = self._max_running - self._running - len(self._backlog)
        self._set_paused(free <= 0)
        if free > 0 and self._running == 0:
            # Wait for one record only: confluent-kafka's batch consume waits out its
            # whole timeout unless the batch fills, which would delay an idle worker.
            records = self._poll(1, _IDLE_POLL_S)
            if records and free > 1:
                records += self._poll(free - 1, 0.0)
        elif free > 0:
            records = self._poll(free, 0.0)
        else:
            # Paused: the poll only serves rebalance callbacks and group liveness.
            records = self._poll(1, 0.0)
        for record in records:
            self._take(record)
        self._start_backlog()
        if records or self._outbox or not self._running:
            self._collect(0.0)
        else:
            self._collect(_BUSY_WAIT_S if free > 0 else _FULL_WAIT_S)
        self._commit()
        self.metrics.iteration()

    def _drain(self) -> None:
        """Stop taking work; commit what finishes within the drain timeout."""
        # Not started yet: uncommitted, so whoever owns the partition next runs them.
        self._backlog.clear()
        self._set_paused(True)
        deadline = time.monotonic() + self._drain_timeout
        while self._running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._collect(min(_FULL_WAIT_S, remaining))
            self._commit()
        self._collect(0.0)
        self._commit()
        if self._running:
            log.warning(
                "worker %s abandons %d activities still running after %.1fs; "
                "they were not committed and will run again",
                self.worker_id,
                self._running,
                self._drain_timeout,
            )

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused and not (paused and self._repause):
            return
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if paused:
            consumer.pause(assignment)
        else:
            consumer.resume(assignment)
        self._paused = paused
        self._repause = False

    # -- taking records ---------------------------------------------------------------

    def _poll(self, max_records: int, timeout: float) -> list[Record]:
        """Poll, dropping records of partitions revoked during the poll.

        librdkafka runs rebalance callbacks inside the poll, so a batch can hold
        records of a partition the poll just revoked: they belong to whoever owns
        the partition now, who reads them again from the committed offset, and
        tracking them here would commit an offset of a partition this worker does
        not own. A partition revoked and assigned again during the poll is read
        again from its committed offset. Records of partitions only assigned during
        the poll are kept: reading them started at the committed offset.
        """
        consumer = self._consumer
        assert consumer is not None
        self._revoked_in_poll = set()
        records = consumer.poll_batch(max_records, timeout)
        revoked = self._revoked_in_poll
        if not revoked or not records:
            return records
        kept: list[Record] = []
        for record in records:
            topic, partition = record.topic(), record.partition()
            assert topic is not None and partition is not None
            if TopicPartition(topic, partition) not in revoked:
                kept.append(record)
        back = sorted(tp for tp in revoked if tp in self._owned)
        if back:
            committed = consumer.committed(back)
            for tp in back:
                offset = committed.get(tp)
                consumer.seek(tp, offset if offset is not None else consumer.watermarks(tp)[0])
        return kept

    def _take(self, record: Record) -> None:
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        assert topic is not None and partition is not None and offset is not None
        tp = TopicPartition(topic, partition)
        track = self._tracks.get(tp)
        if track is None:
            track = self._tracks[tp] = _Track(offset)
        track.pending.append(offset)
        value = record.value()
        try:
            if value is None:
                raise DecodeError("the record has no value (a tombstone on H.activities)")
            task = decode_activity_task(value)
            # Its result could reach no instance (and an id with NUL, a wrong one).
            check_instance_id(task.instance_id)
        except (DecodeError, InvalidInstanceIdError) as exc:
            dead_letters = self.dead_letters
            assert dead_letters is not None
            self._outbox.append(
                dead_letters.of_record(record, str(exc), _now_ms(), cause=type(exc).__name__)
            )
            track.done.add(offset)
            return
        try:
            fdef = self._registry.activity(task.name)
        except UnknownFunctionError as exc:
            if task.name not in self._unknown_names:
                # Once per name: a worker deployed without an activity fails every call of it.
                self._unknown_names.add(task.name)
                log.warning("worker %s fails tasks of unknown activity: %s", self.worker_id, exc)
            self._outbox_event(task, failed_event(task, exc))
            track.done.add(offset)
            return
        job = _Job(tp, offset, track, task, fdef)
        if self._tracing is not None:
            job.headers = record.headers()
        self._backlog.append(job)

    def _outbox_event(self, task: ActivityTask, event: HistoryEvent) -> None:
        key = task.instance_id.encode()
        partition = partition_for(key, self._orchestration_partitions)
        value = encode_message(task.instance_id, event)
        size = record_size(key, value)
        if size > self._result_limit:
            # Produced, it would fail every transaction (and the activity re-run forever):
            # the activity fails instead, with a failure that always fits.
            too_large = RecordTooLargeError(
                f"the result of activity {task.name!r} makes a record of {size:,} bytes, more "
                f"than the {self._result_limit:,} bytes a record of "
                f"{self._topics.orchestrations} may hold"
            )
            value = encode_message(task.instance_id, failed_event(task, too_large))
        self._outbox.append(OutgoingRecord(self._topics.orchestrations, partition, key, value))

    # -- running activities -----------------------------------------------------------

    def _start_backlog(self) -> None:
        while self._backlog and self._running < self._max_running:
            self._start(self._backlog.popleft())

    def _start(self, job: _Job) -> None:
        self._running += 1
        job.started = time.perf_counter()
        future: Future[HistoryEvent] | None = None
        if self._local is not None:
            # Already running next to the co-located processor: take it over.
            future = self._local.adopt(job.task)
        if future is None and not job.fdef.is_async:
            self._thread_pool().submit(self._call_sync, job)
            return
        if future is None:
            loop = self._loop_thread.loop()
            future = asyncio.run_coroutine_threadsafe(self._call_async(job), loop)
        completions = self._completions
        future.add_done_callback(lambda f: completions.put((job, f)))

    def _call_sync(self, job: _Job) -> None:
        self._completions.put(
            (job, run_activity(job.task, job.fdef, self._settings.max_payload_bytes))
        )

    async def _call_async(self, job: _Job) -> HistoryEvent:
        return await run_activity_async(job.task, job.fdef, self._settings.max_payload_bytes)

    def _collect(self, timeout: float) -> None:
        """Handle finished activities, waiting up to ``timeout`` seconds for the first."""
        try:
            item = (
                self._completions.get(timeout=timeout)
                if timeout > 0
                else self._completions.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            self._finish(*item)
            try:
                item = self._completions.get_nowait()
            except queue.Empty:
                return

    def _finish(self, job: _Job, outcome: HistoryEvent | Future[HistoryEvent]) -> None:
        self._running -= 1
        if isinstance(outcome, HistoryEvent):
            event = outcome
        elif outcome.cancelled():  # only at shutdown
            return
        else:
            exc = outcome.exception()
            # BaseExceptions escape the activity wrappers (e.g. SystemExit in user code).
            event = outcome.result() if exc is None else failed_event(job.task, exc)
        seconds = time.perf_counter() - job.started
        self.metrics.activity_done(job.task.name, event, seconds)
        if self._tracing is not None:
            self._tracing.activity(job.task, job.headers, event, seconds)
        self._outbox_event(job.task, event)
        # Results of revoked or rewound partitions are still produced, without offsets.
        if self._tracks.get(job.tp) is job.track:
            job.track.done.add(job.offset)

    def _thread_pool(self) -> CallbackThreadPool:
        if self._pool is None:
            self._pool = CallbackThreadPool(
                self._max_running, f"durafka-activity-{self.worker_id[:8]}"
            )
        return self._pool

    # -- committing -----------------------------------------------------------------

    def _commit(self) -> None:
        """Produce the outbox and commit the completed prefixes, in one transaction."""
        offsets: dict[TopicPartition, int] = {}
        for tp, track in self._tracks.items():
            end = track.take_prefix()
            if end is not None:
                offsets[tp] = end
        if not self._outbox and not offsets:
            return
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        outbox, self._outbox = self._outbox, []
        # Every transaction sends offsets with the group metadata (unmoved ones where
        # nothing completed): that is what fences a worker that lost its partitions.
        for tp, track in self._tracks.items():
            offsets.setdefault(tp, track.committed)
        if not offsets:
            # Only results of partitions this worker no longer owns: their new owner
            # runs those tasks again (at-least-once), so nothing is lost by dropping them.
            log.debug(
                "worker %s drops %d results of revoked partitions", self.worker_id, len(outbox)
            )
            return
        started = time.perf_counter()
        try:
            producer.begin_transaction()
            for topic, partition, key, value, headers in outbox:
                producer.produce(topic, partition, key, value, headers=headers)
            producer.send_offsets(offsets, consumer.group_metadata())
            producer.commit_transaction()
        except TransactionError as exc:
            self.metrics.committed(
                len(outbox), time.perf_counter() - started, "fenced" if exc.fatal else "aborted"
            )
            if exc.fatal:
                raise
            log.warning(
                "worker %s: transaction of %d records failed (%s); aborting and rewinding "
                "to the committed offsets, the affected activities will run again",
                self.worker_id,
                len(outbox),
                exc,
            )
            self._abort_and_rewind()
            return
        self.metrics.committed(len(outbox), time.perf_counter() - started, "committed")
        for tp, end in offsets.items():
            self._tracks[tp].committed = end

    def _abort_and_rewind(self) -> None:
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        producer.abort_transaction()
        assigned = set(consumer.assignment())
        for tp, track in self._tracks.items():
            if tp in assigned:  # always, as revocations drop tracks; never crash-loop on it
                consumer.seek(tp, track.committed)
        # Fresh tracks start again at the committed offsets; running jobs keep the old
        # ones and therefore produce their result without moving any offset.
        self._tracks = {
            tp: _Track(track.committed) for tp, track in self._tracks.items() if tp in assigned
        }
        self._backlog.clear()

    # -- rebalancing ------------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("worker %s assigned %s", self.worker_id, ", ".join(map(str, partitions)))
        # Reading restarts at the committed offset: forget anything older.
        self._forget(partitions)
        self._owned.update(partitions)
        # New partitions are not paused: pause them too on the next step if full.
        self._repause = self._paused

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        log.info("worker %s revoked %s", self.worker_id, ", ".join(map(str, partitions)))
        self._forget(partitions)
        self._owned.difference_update(partitions)
        self._revoked_in_poll.update(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Stop tracking offsets of ``partitions``; their running jobs still report."""
        gone = set(partitions)
        for tp in gone:
            self._tracks.pop(tp, None)
        if self._backlog:
            self._backlog = deque(j for j in self._backlog if j.tp not in gone)
