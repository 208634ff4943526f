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

Each transaction also commits, with every partition's offset, a delivery note
(:mod:`durafka.activities.deliveries`): which tasks past the committed offset
are started, finished or waiting, and how often each was delivered without a
result. After a takeover, a task of the careful window (or one delivered
before) starts only once a note that lists it as started is committed, so a
task that kills its worker is counted, and fails with
:class:`~durafka.errors.PoisonTaskError` after ``max_activity_deliveries``
instead of running forever; the next owner of a partition does not run again
what was finished past a task still running.

What else a worker does not run, or stops waiting for:

* a task whose deadline (the call's ``timeout``) passed before it started;
* a running task past its deadline, or whose heartbeats stopped for longer than
  its heartbeat timeout: the orchestration has failed that attempt, so the
  offset is released (the thread cannot be interrupted; its late result is
  dropped);
* a task of an activity this worker does not register waits, not started,
  for ``unknown_activity_grace_ms`` after it was scheduled (an upgraded worker
  may take the partition meanwhile), then fails with ``UnknownFunctionError``;
* a task written with a schema this version does not know (a newer durafka)
  stops the partition: the worker takes nothing more of it and says to upgrade.
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

from durafka.activities.context import ActivityContext
from durafka.activities.deliveries import (
    SUSPECT_DELIVERIES,
    Note,
    PartitionTrack,
    decode_note,
    encode_note,
)
from durafka.activities.execute import failed_event, run_activity, run_activity_async
from durafka.activities.local import LocalActivities
from durafka.activities.pool import CallbackThreadPool, EventLoopThread
from durafka.codec.newer import written_by_newer_release
from durafka.codec.records import (
    ActivityTask,
    decode_activity_task,
    encode_message,
)
from durafka.deadletters import DeadLetters
from durafka.errors import (
    CommitOutcomeUnknownError,
    DecodeError,
    DurafkaError,
    InvalidInstanceIdError,
    PoisonTaskError,
    RecordTooLargeError,
    TransactionError,
    UnknownFunctionError,
    UnknownSchemaError,
)
from durafka.ids import check_instance_id
from durafka.observability.metrics import WorkerMetrics
from durafka.observability.tracing import Tracing
from durafka.partitioning import partition_for
from durafka.registry import FunctionDef, Registry
from durafka.runtime.history import EventKind, HistoryEvent
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
# How often heartbeats, deadlines and waiting tasks are looked at.
_TEND_INTERVAL_S = 0.1
# A heartbeat goes to the orchestration at most every this fraction of its timeout.
_HEARTBEAT_SEND_FRACTION = 0.5


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True, eq=False)
class _Job:
    """One activity task taken from a record."""

    tp: TopicPartition
    offset: int
    track: PartitionTrack
    task: ActivityTask
    fdef: FunctionDef
    #: Earlier deliveries without a result (from the partition's delivery note).
    deliveries: int = 0
    #: It may start: outside a careful window, or listed as started in a committed note.
    reserved: bool = True
    ctx: ActivityContext | None = None
    future: Future[HistoryEvent] | None = None
    #: Past its deadline or heartbeat timeout: the offset was released, the result is dropped.
    abandoned: bool = False
    beats_sent: int = 0
    beat_sent_at: float = 0.0
    #: When it started (perf_counter), for the metrics and the trace.
    started: float = 0.0
    headers: RecordHeaders = None  # only kept when tracing is on

    @property
    def isolated(self) -> bool:
        """Runs alone: its earlier deliveries suggest it takes its worker down."""
        return self.deliveries >= SUSPECT_DELIVERIES


@dataclass(slots=True)
class _Waiting:
    """A task of an activity this worker does not register, waiting for its grace period."""

    tp: TopicPartition
    offset: int
    track: PartitionTrack
    task: ActivityTask
    until_ms: int


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
            ``transaction_timeout_ms``, ``max_activity_deliveries``,
            ``unknown_activity_grace_ms`` and ``client_config`` are used.
        registry: the activities this worker can run.
        transport: the cluster (or ``memory://`` broker) to work with.
        worker_id: names the ``transactional.id`` (``H.worker.<worker_id>``); a
            restarted worker with the same id fences its previous incarnation.
            A random id when omitted.
        exclusive_id: no other live worker can have this id (default: only when
            the id is random; :meth:`durafka.App.worker` holds a lock on the id it
            keeps). A fence then cannot come from a newer worker: the coordinator
            bumped the producer's epoch to abort a transaction that outlived
            ``transaction_timeout_ms`` (e.g. while the broker was down). Such a
            worker replaces its producer and reads on from the group's committed
            offsets, as Kafka Streams does on a fenced producer (once: fenced again
            before it committed, it stops); a worker whose id may be shared stops
            at once, leaving its partitions to the newer one.
        drain_timeout: after ``stop`` is set, how long ``run`` waits for running
            activities before abandoning them (they then run again elsewhere).
        local_activities: the co-located processor's local pool: a task it handed
            off is adopted (its running execution awaited) instead of run again.
        after_unclean_exit: the last process ran activities next to its processor
            and did not stop cleanly (its crash marker was found). Those local runs
            leave no delivery note, so a partition without one is taken over as if
            its owner had died right after an empty note at the committed offset:
            the tasks of the careful window count one delivery and start only once
            a note lists them. Without it, a task that took the process down while
            it ran locally, before any worker had committed a note on its
            partition, would not be counted.

    Attributes:
        worker_id: this worker's id (given or random).
        group_id: the consumer group, ``H.workers``.
        transactional_id: the producer's ``transactional.id``, ``H.worker.<worker_id>``.
        poisoned: tasks failed with ``PoisonTaskError`` by this worker.
        expired: tasks not started, or not waited for, past their deadline.
        blocked_partitions: partitions stopped at a record of a newer schema.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        transport: Transport,
        *,
        worker_id: str | None = None,
        exclusive_id: bool | None = None,
        drain_timeout: timedelta = timedelta(seconds=5),
        local_activities: LocalActivities | None = None,
        after_unclean_exit: bool = False,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._transport = transport
        self._topics = HubTopics(settings.task_hub)
        self.worker_id = worker_id or uuid.uuid4().hex
        self._exclusive_id = worker_id is None if exclusive_id is None else exclusive_id
        # Set by a recovery from a fence, cleared by the next commit: a second fence
        # before then is not a timed-out transaction, and stops the worker.
        self._fenced_since_commit = False
        self.group_id = f"{settings.task_hub}.workers"
        self.transactional_id = f"{settings.task_hub}.worker.{self.worker_id}"
        self._max_running = settings.max_concurrent_activities
        self._max_deliveries = settings.max_activity_deliveries
        # How far past its last note a dead owner may have started tasks (markers
        # take offsets too): see durafka.activities.deliveries.
        self._careful_span = 2 * self._max_running
        self._grace_ms = settings.unknown_activity_grace_ms
        self._drain_timeout = drain_timeout.total_seconds()
        self._local = local_activities
        self._after_unclean_exit = after_unclean_exit

        self._stop: threading.Event | None = None
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
        self.poisoned = 0
        self.expired = 0
        self.blocked_partitions: set[TopicPartition] = set()
        self._tracks: dict[TopicPartition, PartitionTrack] = {}
        self._owned: set[TopicPartition] = set()
        # Partitions revoked during the current poll (see _poll).
        self._revoked_in_poll: set[TopicPartition] = set()
        # Jobs taken, not started: the concurrency bound holds no matter what polls
        # return, and a job starts only once a committed note lists it as started.
        self._backlog: deque[_Job] = deque()
        self._running = 0
        # Of the running jobs, those abandoned (see _abandon).
        self._abandoned = 0
        # The job running alone (see _Job.isolated), if any.
        self._alone: _Job | None = None
        # Running jobs with a deadline or a heartbeat timeout.
        self._watched: set[_Job] = set()
        self._waiting: list[_Waiting] = []
        self._next_tend = 0.0
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
            blocked=self.blocked_partitions,
        )

    # -- lifecycle ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then drain and return (blocking).

        In-flight activities get ``drain_timeout`` to finish and have their results
        committed; activities still running then are abandoned (uncommitted, so they
        run again). Clients are closed on return.

        Raises:
            TransactionError: the producer was fenced (another worker with the same
                ``worker_id`` started; not raised for an ``exclusive_id``) or failed
                fatally; nothing more can be committed.
            DurafkaError: the consumer failed fatally.
        """
        if self._started:
            raise DurafkaError("ActivityWorker.run() can be called once; create a new worker")
        self._started = True
        self._stop = stop
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
        self._producer = self._new_producer()
        consumer = self._transport.consumer(self.group_id, **for_client(config, "consumer"))
        self._consumer = consumer
        consumer.subscribe(
            [self._topics.activities], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    # -- the loop -------------------------------------------------------------------

    def _step(self) -> None:
        """One iteration: take records, commit (results, offsets, notes), start, collect."""
        if time.monotonic() >= self._next_tend:
            self._tend()
        self._start_backlog()
        free = self._max_running - self._running - len(self._backlog)
        self._set_paused(free <= 0)
        # Something to commit: do not wait for records.
        wait = not self._outbox and not self._running and not self._backlog
        if free > 0 and wait:
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
        self._collect(0.0)
        # One transaction: results so far, offsets, and the notes that let the
        # jobs about to start start.
        self._commit()
        self.metrics.iteration()
        self._start_backlog()
        if not self._running or self._outbox:
            return
        self._collect(_BUSY_WAIT_S if free > 0 else _FULL_WAIT_S)

    def _drain(self) -> None:
        """Stop taking work; commit what finishes within the drain timeout."""
        # Not started yet: uncommitted, so whoever owns the partition next runs them
        # (not counted as delivered: they never started).
        for job in self._backlog:
            job.track.started.discard(job.offset)
        self._backlog.clear()
        self._waiting.clear()
        self._set_paused(True)
        deadline = time.monotonic() + self._drain_timeout
        # Abandoned jobs (past their deadline or heartbeat timeout) are not waited for.
        while self._running > self._abandoned:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._collect(min(_FULL_WAIT_S, remaining))
            self._commit()
        self._collect(0.0)
        # Also with nothing new: the note then lists what still runs, for the next
        # owner to count.
        self._commit(force=True)
        if self._running > self._abandoned:
            log.warning(
                "worker %s abandons %d activities still running after %.1fs; "
                "they were not committed and will run again",
                self.worker_id,
                self._running - self._abandoned,
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
            # A partition stopped at a record of a newer schema stays paused.
            consumer.resume([tp for tp in assignment if tp not in self.blocked_partitions])
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
        if tp in self.blocked_partitions:
            return  # behind a record this version cannot read: left for an upgraded worker
        track = self._tracks.get(tp)
        if track is None:
            track = self._tracks[tp] = PartitionTrack(offset)
        todo, deliveries = track.take(offset)
        if not todo:
            return  # its outcome was committed by an earlier owner
        value = record.value()
        try:
            if value is None:
                raise DecodeError("the record has no value (a tombstone on H.activities)")
            task = decode_activity_task(value)
            # Its result could reach no instance (and an id with NUL, a wrong one).
            check_instance_id(task.instance_id)
        except UnknownSchemaError as exc:
            assert value is not None
            key = record.key()
            record_id = None if key is None else key.decode("utf-8", "replace")
            if written_by_newer_release(value, exc.schema, record_id):
                track.untake(offset)
                self._block(tp, offset, exc)
                return
            # Garbage behind our marker (a foreign producer): dead-lettered as below.
            self._dead_letter(track, offset, record, exc)
            return
        except (DecodeError, InvalidInstanceIdError) as exc:
            self._dead_letter(track, offset, record, exc)
            return
        if deliveries >= self._max_deliveries:
            self._fail_poison(track, offset, task, deliveries)
            return
        if task.deadline is not None and _now_ms() >= task.deadline:
            # The orchestration's timeout fired: that attempt failed (and may have
            # been retried as a new task); running it would only waste the slot.
            self.expired += 1
            log.debug("worker %s skips expired task %s", self.worker_id, _describe(task))
            track.done.add(offset)
            return
        try:
            fdef = self._registry.activity(task.name)
        except UnknownFunctionError as exc:
            self._unknown(tp, offset, track, task, exc)
            return
        # Outside a careful window (and never delivered before) it starts at once.
        reserved = not track.careful(offset)
        if reserved:
            # It starts as soon as a slot frees, maybe before the next note: every note
            # from now on counts it as started, or a crash right after its start would
            # leave "taken, not started" for the next owner, which would run it without
            # counting the delivery. (A clean stop takes the backlog's back.)
            track.started.add(offset)
        job = _Job(tp, offset, track, task, fdef, deliveries, reserved)
        if self._tracing is not None:
            job.headers = record.headers()
        self._backlog.append(job)

    def _fail_poison(
        self, track: PartitionTrack, offset: int, task: ActivityTask, deliveries: int
    ) -> None:
        self.poisoned += 1
        message = (
            f"activity {task.name!r} was delivered {deliveries} times without a result: its "
            "worker crashed, was killed or lost the partition while running it each time "
            f"(max_activity_deliveries={self._max_deliveries}); it is not run again"
        )
        log.error("worker %s fails task %s: %s", self.worker_id, _describe(task), message)
        self._outbox_event(task, failed_event(task, PoisonTaskError(message)))
        track.done.add(offset)

    def _unknown(
        self,
        tp: TopicPartition,
        offset: int,
        track: PartitionTrack,
        task: ActivityTask,
        exc: UnknownFunctionError,
    ) -> None:
        """A task of an activity not registered here: wait for its grace period, then fail it.

        During a rolling upgrade an older worker meets tasks of activities only the
        new version has; the partition moves to an upgraded worker when this one
        stops, which then runs them (this one commits nothing past them).
        """
        until_ms = task.scheduled_at + self._grace_ms
        if task.name not in self._unknown_names:
            # Once per name: a worker deployed without an activity meets all its calls.
            self._unknown_names.add(task.name)
            log.warning(
                "worker %s does not register activity %r: its tasks wait up to %.0f s after "
                "they were scheduled for a worker that does, then fail (%s)",
                self.worker_id,
                task.name,
                self._grace_ms / 1000,
                exc,
            )
        waiting = _Waiting(tp, offset, track, task, until_ms)
        if _now_ms() >= until_ms:
            self._give_up_unknown(waiting)
        else:
            self._waiting.append(waiting)

    def _give_up_unknown(self, waiting: _Waiting) -> None:
        task = waiting.task
        exc = UnknownFunctionError(
            f"no worker registered activity {task.name!r} within "
            f"{self._grace_ms / 1000:g} s after it was scheduled (unknown_activity_grace_ms); "
            f"this worker knows {sorted(self._registry.activities) or 'none'}: deploy a "
            "worker that registers it"
        )
        self._outbox_event(task, failed_event(task, exc))
        waiting.track.done.add(waiting.offset)

    def _dead_letter(
        self, track: PartitionTrack, offset: int, record: Record, exc: Exception
    ) -> None:
        """Dead-letter a task record that cannot be read; its offset counts as done."""
        dead_letters = self.dead_letters
        assert dead_letters is not None
        self._outbox.append(
            dead_letters.of_record(record, str(exc), _now_ms(), cause=type(exc).__name__)
        )
        track.done.add(offset)

    def _block(self, tp: TopicPartition, offset: int, exc: UnknownSchemaError) -> None:
        """Stop taking ``tp`` at a record this version cannot read (written by a newer one)."""
        self.blocked_partitions.add(tp)
        consumer = self._consumer
        assert consumer is not None
        consumer.pause([tp])
        log.error(
            "worker %s stops taking tasks from %s at offset %d: the task there was written "
            "by a newer durafka (%s). Upgrade this worker: the partition waits, nothing is "
            "lost, and tasks before it are still finished and committed",
            self.worker_id,
            tp,
            offset,
            exc,
        )

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

    def _plan_starts(self) -> list[_Job]:
        """The backlog jobs that start right after the next commit, in order."""
        if self._alone is not None:
            return []
        slots = self._max_running - self._running
        planned: list[_Job] = []
        for job in self._backlog:
            if slots <= 0:
                break
            if job.isolated:
                # Alone: once nothing else runs, and nothing starts beside it.
                if not planned and self._running == 0:
                    planned.append(job)
                break
            planned.append(job)
            slots -= 1
        return planned

    def _start_backlog(self) -> None:
        backlog = self._backlog
        while backlog and self._alone is None and self._running < self._max_running:
            job = backlog[0]
            if not job.reserved or job.track.note_dirty:
                return  # waits for the commit of its note
            if job.isolated:
                if self._running:
                    return
                self._alone = job
            backlog.popleft()
            self._start(job)

    def _start(self, job: _Job) -> None:
        self._running += 1
        job.started = time.perf_counter()
        if self._tracks.get(job.tp) is job.track:
            job.track.started.add(job.offset)  # in the next note
        task = job.task
        future: Future[HistoryEvent] | None = None
        if self._local is not None:
            # Already running next to the co-located processor: take it over.
            adopted = self._local.adopt(task)
            if adopted is not None:
                future, job.ctx = adopted
        if job.ctx is None:
            job.ctx = ActivityContext(task, delivery=job.deliveries)
        if task.deadline is not None or task.heartbeat_timeout_ms is not None:
            self._watched.add(job)
            if task.heartbeat_timeout_ms is not None:
                # The first heartbeat arms the orchestration's heartbeat timer.
                self._send_heartbeat(job, time.monotonic())
        if future is None and not job.fdef.is_async:
            self._thread_pool().submit(self._call_sync, job)
            return
        if future is None:
            loop = self._loop_thread.loop()
            future = asyncio.run_coroutine_threadsafe(self._call_async(job), loop)
        job.future = future
        completions = self._completions
        future.add_done_callback(lambda f: completions.put((job, f)))

    def _call_sync(self, job: _Job) -> None:
        self._completions.put(
            (job, run_activity(job.task, job.fdef, self._settings.max_payload_bytes, job.ctx))
        )

    async def _call_async(self, job: _Job) -> HistoryEvent:
        return await run_activity_async(
            job.task, job.fdef, self._settings.max_payload_bytes, job.ctx
        )

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
        self._watched.discard(job)
        if self._alone is job:
            self._alone = None
        if job.abandoned:
            self._abandoned -= 1
            return  # its attempt failed already; the offset was released
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

    # -- heartbeats, deadlines, waiting tasks -------------------------------------------

    def _tend(self) -> None:
        """Send due heartbeats, release jobs past their deadline, end expired waits."""
        now = time.monotonic()
        self._next_tend = now + _TEND_INTERVAL_S
        if self._watched:
            now_ms = _now_ms()
            for job in list(self._watched):
                self._tend_job(job, now, now_ms)
        if self._waiting:
            now_ms = _now_ms()
            still: list[_Waiting] = []
            for waiting in self._waiting:
                if self._tracks.get(waiting.tp) is not waiting.track:
                    continue  # revoked or rewound: taken again from the committed offset
                if now_ms >= waiting.until_ms:
                    self._give_up_unknown(waiting)
                else:
                    still.append(waiting)
            self._waiting = still

    def _tend_job(self, job: _Job, now: float, now_ms: int) -> None:
        task, ctx = job.task, job.ctx
        assert ctx is not None
        timeout_ms = task.heartbeat_timeout_ms
        if timeout_ms is not None:
            timeout = timeout_ms / 1000
            if now - ctx.last_heartbeat > timeout:
                self._abandon(job, f"it sent no heartbeat within {timedelta(seconds=timeout)}")
                return
            if ctx.beats > job.beats_sent and now - job.beat_sent_at >= (
                timeout * _HEARTBEAT_SEND_FRACTION
            ):
                self._send_heartbeat(job, now)
        if task.deadline is not None and now_ms >= task.deadline:
            self._abandon(job, "its deadline (the call's timeout) passed")

    def _send_heartbeat(self, job: _Job, now: float) -> None:
        task, ctx = job.task, job.ctx
        assert ctx is not None
        job.beats_sent = ctx.beats
        job.beat_sent_at = now
        self._outbox_event(
            task,
            HistoryEvent(
                EventKind.TASK_HEARTBEAT,
                _now_ms(),
                seq=task.seq,
                name=task.name,
                payload=ctx.details,
                attempt=task.attempt,
                execution_id=task.execution_id,
                heartbeat_timeout_ms=task.heartbeat_timeout_ms,
            ),
        )

    def _abandon(self, job: _Job, why: str) -> None:
        """Stop waiting for a running job whose attempt the orchestration failed already.

        Its offset counts as done, so the partition's commit is not held back by a
        hung activity (and a rebalance does not run it again). A sync activity's
        thread cannot be interrupted and keeps its slot until it returns; an async
        one is cancelled.
        """
        job.abandoned = True
        self._abandoned += 1
        self.expired += 1
        self._watched.discard(job)
        log.warning(
            "worker %s stops waiting for activity %s: %s; the orchestration fails (or "
            "retries) that attempt, and its late result will be dropped",
            self.worker_id,
            _describe(job.task),
            why,
        )
        if self._tracks.get(job.tp) is job.track:
            job.track.done.add(job.offset)
            job.track.note_dirty = True
        if job.future is not None:
            job.future.cancel()

    # -- committing -----------------------------------------------------------------

    def _commit(self, *, force: bool = False) -> None:
        """Produce the outbox and commit the completed prefixes and notes, in one transaction.

        The notes list as started the careful jobs about to start
        (:meth:`_plan_starts`): they start only once this transaction committed.
        """
        offsets: dict[TopicPartition, int] = {}
        for tp, track in self._tracks.items():
            end = track.take_prefix()
            if end is not None:
                offsets[tp] = end
        to_reserve = [job for job in self._plan_starts() if not job.reserved]
        for job in to_reserve:
            if self._tracks.get(job.tp) is job.track:
                job.track.started.add(job.offset)
        dirty = any(t.note_dirty for t in self._tracks.values())
        if not (force or self._outbox or offsets or to_reserve or dirty):
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
        notes = {tp: self._tracks[tp].note(end) for tp, end in offsets.items()}
        started = time.perf_counter()
        try:
            producer.begin_transaction()
            for topic, partition, key, value, headers in outbox:
                producer.produce(topic, partition, key, value, headers=headers)
            producer.send_offsets(
                offsets,
                consumer.group_metadata(),
                {tp: encode_note(note) for tp, note in notes.items()},
            )
            producer.commit_transaction()
        except CommitOutcomeUnknownError as exc:
            # Aborting now could fail, or race the commit: the producer is abandoned and
            # its successor's init_transactions completes or aborts the transaction.
            self.metrics.committed(len(outbox), time.perf_counter() - started, "unknown")
            log.warning(
                "worker %s: the outcome of a transaction of %d records is unknown (%s); "
                "replacing the producer and reading on from what the group committed",
                self.worker_id,
                len(outbox),
                exc,
            )
            self._replace_producer()
            self._rewind(self._read_tracks(self._assigned_tracks()))
            return
        except TransactionError as exc:
            self.metrics.committed(
                len(outbox), time.perf_counter() - started, "fenced" if exc.fatal else "aborted"
            )
            if exc.fatal:
                self._recover_from_fence(exc)
                return
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
        self._fenced_since_commit = False
        for tp, end in offsets.items():
            self._tracks[tp].committed_to(end, notes[tp])
        for job in to_reserve:
            job.reserved = True

    def _abort_and_rewind(self) -> None:
        producer = self._producer
        assert producer is not None
        try:
            producer.abort_transaction()
        except TransactionError as exc:
            if exc.fatal:
                self._recover_from_fence(exc)
                return
            # The broker or the coordinator is unreachable: a new producer with the
            # same transactional.id aborts what is left once it gets through.
            log.warning(
                "worker %s: aborting failed (%s); recreating the producer", self.worker_id, exc
            )
            self._replace_producer()
        # Nothing of the transaction was committed: the tracks' own offsets and notes
        # are the group's (taken over: what was started runs again).
        self._rewind(
            {
                tp: PartitionTrack(
                    self._tracks[tp].committed, self._tracks[tp].last_note, self._careful_span
                )
                for tp in self._assigned_tracks()
            }
        )

    def _recover_from_fence(self, exc: TransactionError) -> None:
        """A fenced producer: go on with a new one from what the group committed if the
        id is exclusive and the last fence was followed by a commit; else stop
        (re-raise ``exc``)."""
        if not self._exclusive_id or self._fenced_since_commit:
            raise exc
        self._fenced_since_commit = True
        log.warning(
            "worker %s: its producer %s was fenced (%s); no other worker has its id, so the "
            "coordinator aborted a transaction that outlived transaction_timeout_ms: "
            "replacing the producer and reading on from what the group committed",
            self.worker_id,
            self.transactional_id,
            exc,
        )
        self._replace_producer()
        # Whatever the fenced producer did is settled now (init_transactions): the
        # group's offsets and notes say what was committed.
        self._rewind(self._read_tracks(self._assigned_tracks()))

    def _assigned_tracks(self) -> list[TopicPartition]:
        """The tracked partitions still assigned (always all, as revocations drop tracks)."""
        consumer = self._consumer
        assert consumer is not None
        assigned = set(consumer.assignment())
        return [tp for tp in self._tracks if tp in assigned]

    def _rewind(self, tracks: dict[TopicPartition, PartitionTrack]) -> None:
        """Read the partitions of ``tracks`` again from their committed offsets.

        Jobs not started are dropped (taken again); running ones keep their old
        tracks and produce their result without offsets.
        """
        consumer = self._consumer
        assert consumer is not None
        for tp, track in tracks.items():
            consumer.seek(tp, track.committed)
        self._tracks = tracks
        self._backlog.clear()
        self._waiting.clear()

    def _replace_producer(self) -> None:
        """Abandon the producer (its transaction's state is unknown) and make a new one
        with the same ``transactional.id``.

        Its ``init_transactions`` fences the old one and completes or aborts its
        open transaction; retried (with a backoff) until it succeeds or the worker
        is asked to stop.
        """
        old = self._producer
        self._producer = None
        if old is not None:
            # Not closed: that would try to abort again (and can hang); the new producer
            # fences it.
            old.abandon()
        delay = 0.1
        while True:
            try:
                self._producer = self._new_producer()
                return
            except TransactionError as exc:
                if exc.fatal or (self._stop is not None and self._stop.is_set()):
                    raise
                log.warning("worker %s: a new producer failed, retrying: %s", self.worker_id, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _new_producer(self) -> TransactionalProducer:
        producer = self._transport.transactional_producer(
            self.transactional_id,
            **{
                **for_client(self._settings.client_config, "producer"),
                "transaction.timeout.ms": str(self._settings.transaction_timeout_ms),
            },
        )
        try:
            producer.init_transactions()
        except BaseException:
            producer.close()
            raise
        return producer

    def _read_tracks(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, PartitionTrack]:
        """Tracks for ``partitions`` from the group's committed offsets and notes."""
        if not partitions:
            return {}
        consumer = self._consumer
        assert consumer is not None
        committed = consumer.committed(partitions)
        notes = consumer.committed_metadata(partitions)
        tracks: dict[TopicPartition, PartitionTrack] = {}
        for tp in partitions:
            offset = committed.get(tp)
            if offset is None:
                offset = consumer.watermarks(tp)[0]
            note = decode_note(notes.get(tp, ""))
            if note is None and self._after_unclean_exit:
                note = Note(offset)  # see after_unclean_exit
            tracks[tp] = PartitionTrack(offset, note, self._careful_span)
            suspects = {o: n for o, n in tracks[tp].carried.items() if n}
            if suspects:
                log.warning(
                    "worker %s takes over %s with %d tasks delivered before without a result "
                    "(most: %d times); tasks delivered %d times or more run alone, at %d they fail",
                    self.worker_id,
                    tp,
                    len(suspects),
                    max(suspects.values()),
                    SUSPECT_DELIVERIES,
                    self._max_deliveries,
                )
        return tracks

    # -- rebalancing ------------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("worker %s assigned %s", self.worker_id, ", ".join(map(str, partitions)))
        # Reading restarts at the committed offset: forget anything older.
        self._forget(partitions)
        self._tracks.update(self._read_tracks(partitions))
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
            self.blocked_partitions.discard(tp)
        if self._backlog:
            self._backlog = deque(j for j in self._backlog if j.tp not in gone)
        if self._waiting:
            self._waiting = [w for w in self._waiting if w.tp not in gone]


def _describe(task: ActivityTask) -> str:
    return f"{task.name!r} #{task.seq} of instance {task.instance_id!r}"
