"""The processor loop: one Kafka transaction per batch (exactly-once, EOS v2 style).

Each iteration:

1. poll a batch from the assigned partitions of ``H.orchestrations`` (read_committed);
2. group its records by partition and instance, add the timers that came due;
3. load each instance (cache, else store + replay), apply its events, run the
   orchestrator one step, collect its actions;
4. in one transaction: activity tasks, messages to other instances, status
   records, dead letters and one changelog record per dirty store key; flush;
   send the consumer offsets; commit;
5. only then write each partition's store batch together with the changelog
   offset reached (the checkpoint).

A failed commit aborts, drops the cached state of the batch's partitions and
seeks back to the batch's first offsets, so the batch is processed again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from durafka.codec.records import (
    ActivityTask,
    InstanceState,
    decode_message,
    encode_activity_task,
    encode_chunk,
    encode_dead_letter,
    encode_message,
    encode_state,
    encode_status,
)
from durafka.entities import is_entity_id
from durafka.errors import DecodeError, DurafkaError, FailureDetails, TransactionError
from durafka.processor.entities import EntityProcessor
from durafka.processor.instances import Instance, InstanceCache, load_instance
from durafka.processor.keys import (
    TIMER_END,
    TIMER_PREFIX,
    history_key,
    history_prefix,
    instance_key,
    parse_timer_key,
    timer_key,
    timer_upper_bound,
)
from durafka.processor.local import LocalActivities, LocalRun
from durafka.registry import Registry
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import (
    COMPLETION_KINDS,
    ENTITY_ACTION_KINDS,
    EventKind,
    HistoryEvent,
)
from durafka.settings import Settings
from durafka.state.base import PartitionStore, StoreFactory
from durafka.state.restore import restore_partition
from durafka.state.transaction import StoreTransaction
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics, partition_for
from durafka.transport.base import Consumer, Record, TopicPartition, Transport

log = logging.getLogger("durafka.processor")

K = EventKind
_TERMINAL = frozenset({RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.TERMINATED})
#: Timers fired per partition per iteration at most (keeps one batch bounded).
MAX_TIMERS_PER_ITERATION = 1000
#: Continue-as-new generations run back to back within one batch at most.
MAX_GENERATIONS_PER_BATCH = 100
#: Sequence id of the timer that wakes an instance whose next generation was deferred.
WAKE_UP_SEQ = -1


@dataclass(slots=True)
class _Partition:
    """An owned input partition: its store and the current batch's store transaction."""

    number: int
    store: PartitionStore
    tx: StoreTransaction | None = None
    next_timer_ms: int | None = None


@dataclass(slots=True)
class _Batch:
    """Everything one iteration produces, kept until the transaction commits."""

    now_ms: int
    first_offsets: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    work: dict[int, dict[str, list[HistoryEvent]]] = field(default_factory=dict)
    touched: dict[str, Instance] = field(default_factory=dict)
    out: list[tuple[str, int, bytes | None, bytes | None]] = field(default_factory=list)
    #: Activities started next to the processor, with their instance's partition.
    local: list[tuple[int, LocalRun]] = field(default_factory=list)

    def add(self, partition: int, instance_id: str, event: HistoryEvent) -> None:
        by_instance = self.work.get(partition)
        if by_instance is None:
            by_instance = self.work[partition] = {}
        events = by_instance.get(instance_id)
        if events is None:
            by_instance[instance_id] = [event]
        else:
            events.append(event)


class Processor:
    """Runs orchestrations on the partitions of ``H.orchestrations`` it owns.

    Partitions come from the consumer group ``<hub>.processors`` (cooperative
    rebalancing across processes), or from a static list (one
    ``transactional.id`` per range, for fencing).

    Example:
        >>> stop = threading.Event()
        >>> Processor(settings, registry, transport, store_factory).run(stop)
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        transport: Transport,
        store_factory: StoreFactory,
        *,
        partitions: list[int] | None = None,
        clock: Callable[[], float] = time.time,
        processor_id: str | None = None,
        local_activities: LocalActivities | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.transport = transport
        self.store_factory = store_factory
        self.static_partitions = partitions
        self.clock = clock
        self.topics = HubTopics(settings.task_hub)
        self.cache = InstanceCache(settings.cache_size)
        self._local = local_activities
        self._entities = EntityProcessor(
            registry, self.topics, self._send, max_payload_bytes=settings.max_payload_bytes
        )
        self._owned: dict[int, _Partition] = {}
        self._to_restore: list[int] = []
        self._n_orchestrations = transport.partition_count(self.topics.orchestrations)
        self._n_activities = transport.partition_count(self.topics.activities)
        self._n_dead = transport.partition_count(self.topics.dead_letters)
        if partitions is not None:
            bad = [p for p in partitions if not 0 <= p < self._n_orchestrations]
            if bad:
                raise DurafkaError(
                    f"partitions {bad} do not exist: {self.topics.orchestrations} has "
                    f"{self._n_orchestrations} partitions"
                )
            suffix = f"p{min(partitions)}-{max(partitions)}" if partitions else "none"
        else:
            suffix = processor_id or uuid.uuid4().hex[:12]
        self._consumer: Consumer = transport.consumer(
            group_id=f"{settings.task_hub}.processors", **settings.client_config
        )
        self._restore_consumer: Consumer | None = None
        self._producer = transport.transactional_producer(
            f"{settings.task_hub}.processor.{suffix}",
            **{
                "transaction.timeout.ms": str(settings.transaction_timeout_ms),
                **settings.client_config,
            },
        )
        self._producer.init_transactions()
        self._changelog_offsets: dict[int, int] = {}
        # History appended per instance in the current batch, written as one chunk each.
        self._pending_chunks: dict[str, list[list[HistoryEvent]]] = {}
        self._delivery_error: Any = None
        self.batches_committed = 0

    # -- lifecycle ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, then release every partition."""
        if self.static_partitions is None:
            self._consumer.subscribe(
                [self.topics.orchestrations], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
        else:
            tps = [TopicPartition(self.topics.orchestrations, p) for p in self.static_partitions]
            committed = self._consumer.committed(tps)
            self._consumer.assign({tp: committed.get(tp) for tp in tps})
            self._on_assign(tps)
        try:
            while not stop.is_set():
                self.run_once()
        finally:
            self.close()

    def run_once(self, poll_timeout: float | None = None) -> int:
        """One iteration: poll, process, commit. Returns how many records it consumed."""
        if self._to_restore:
            self._restore_pending()
        if poll_timeout is None:
            poll_timeout = self._poll_timeout()
        records = self._consumer.poll_batch(self.settings.batch_size, poll_timeout)
        if self._to_restore:
            # An assignment arrived during the poll; its records (if any) come again.
            self._restore_pending()
        self._process(records)
        return len(records)

    def close(self) -> None:
        """Close the consumers, the producer and every store."""
        if self._local is not None:
            self._local.close()
        for part in list(self._owned.values()):
            self._release(part)
        self._owned.clear()
        for c in (self._consumer, self._restore_consumer):
            if c is not None:
                try:
                    c.close()
                except Exception:  # closing is best effort
                    log.debug("consumer close failed", exc_info=True)
        try:
            self._producer.close()
        except Exception:
            log.debug("producer close failed", exc_info=True)

    # -- partitions -------------------------------------------------------------------

    def _on_assign(self, tps: list[TopicPartition]) -> None:
        new = [tp.partition for tp in tps if tp.partition not in self._owned]
        if not new:
            return
        # Paused until restored: no record is processed against a stale store.
        self._consumer.pause(tps)
        self._to_restore.extend(new)
        log.info("assigned partitions %s of %s", new, self.topics.orchestrations)

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in tps}
        self._to_restore = [p for p in self._to_restore if p not in gone]
        for p in gone:
            part = self._owned.pop(p, None)
            if part is not None:
                self._release(part)
        self.cache.drop_partitions(gone)
        log.info("revoked partitions %s of %s", sorted(gone), self.topics.orchestrations)

    def _release(self, part: _Partition) -> None:
        if part.tx is not None:
            part.tx.fail()
        try:
            part.store.close()
        except Exception:
            log.warning("closing the store of partition %d failed", part.number, exc_info=True)

    def _restore_pending(self) -> None:
        pending, self._to_restore = self._to_restore, []
        for p in pending:
            store = self.store_factory.open(self.settings.task_hub, p)
            if self._restore_consumer is None:
                self._restore_consumer = self.transport.consumer(
                    None, **self.settings.client_config
                )
            started = time.monotonic()
            n = restore_partition(
                store, self._restore_consumer, TopicPartition(self.topics.changelog, p)
            )
            part = _Partition(p, store)
            part.next_timer_ms = self._first_timer(store)
            self._owned[p] = part
            log.info(
                "partition %d ready: restored %d changelog records in %.2fs",
                p,
                n,
                time.monotonic() - started,
            )
        self._consumer.resume([TopicPartition(self.topics.orchestrations, p) for p in pending])

    @staticmethod
    def _first_timer(store: PartitionStore) -> int | None:
        for key, _ in store.iter_prefix(TIMER_PREFIX):
            return parse_timer_key(key)[0]
        return None

    def next_timer_ms(self) -> int | None:
        """The due time of the earliest timer of the owned partitions (None: no timer)."""
        dues = [p.next_timer_ms for p in self._owned.values() if p.next_timer_ms is not None]
        return min(dues) if dues else None

    @property
    def is_idle(self) -> bool:
        """No partition is waiting to be restored (used by the time-skipping test env)."""
        return not self._to_restore

    def _poll_timeout(self) -> float:
        timeout = 0.05
        now_ms = self.clock() * 1000
        for part in self._owned.values():
            if part.next_timer_ms is not None:
                timeout = min(timeout, max(0.0, (part.next_timer_ms - now_ms) / 1000))
        return timeout

    # -- one batch ------------------------------------------------------------------------

    def _process(self, records: list[Record]) -> None:
        batch = _Batch(now_ms=int(self.clock() * 1000))
        for r in records:
            self._accept(batch, r)
        self._collect_due_timers(batch)
        if not batch.work and not batch.out and not batch.next_offsets:
            return
        for p, instances in batch.work.items():
            part = self._owned.get(p)
            if part is None:  # revoked meanwhile: its records come again to the new owner
                continue
            tx = self._tx(part)
            for iid, events in instances.items():
                try:
                    if is_entity_id(iid):
                        self._entities.process(batch, part.number, tx, iid, events)
                    else:
                        self._process_instance(batch, part, tx, iid, events)
                except Exception as exc:
                    # A bug must not become a crash loop on the same record: the
                    # instance fails with the internal error and the batch goes on.
                    log.exception("internal error processing instance %r", iid)
                    self._fail_internally(batch, part, tx, iid, exc)
        if batch.local:
            self._run_local_activities(batch)
        self._emit_instance_writes(batch)
        self._commit(batch)

    def _accept(self, batch: _Batch, r: Record) -> None:
        p = r.partition()
        offset = r.offset()
        assert p is not None and offset is not None
        batch.first_offsets.setdefault(p, offset)
        batch.next_offsets[p] = offset + 1
        value = r.value()
        try:
            if value is None:
                raise DecodeError("empty record value")
            iid, event = decode_message(value)
        except DecodeError as exc:
            self._dead_letter(batch, r, str(exc))
            return
        batch.add(p, iid, event)

    def _dead_letter(self, batch: _Batch, r: Record, reason: str) -> None:
        key = r.key()
        log.warning("dead-lettering %s[%s]@%s: %s", r.topic(), r.partition(), r.offset(), reason)
        batch.out.append(
            (
                self.topics.dead_letters,
                partition_for(key or b"", self._n_dead),
                key,
                encode_dead_letter(
                    reason,
                    r.topic() or "",
                    r.partition() or 0,
                    r.offset() or 0,
                    key,
                    r.value(),
                    batch.now_ms,
                ),
            )
        )

    def _collect_due_timers(self, batch: _Batch) -> None:
        now = batch.now_ms
        for part in self._owned.values():
            if part.next_timer_ms is None or part.next_timer_ms > now:
                continue
            tx = self._tx(part)
            part.next_timer_ms = None
            due_timers = tx.iter_range(TIMER_PREFIX, timer_upper_bound(now))
            for fired, (key, _) in enumerate(due_timers):
                if fired >= MAX_TIMERS_PER_ITERATION:
                    part.next_timer_ms = now  # more are due: next iteration
                    break
                due, iid, seq = parse_timer_key(key)
                tx.delete(key)
                batch.add(part.number, iid, HistoryEvent(K.TIMER_FIRED, now, seq=seq, fire_at=due))
            else:
                part.next_timer_ms = self._first_due_after(tx, now)

    @staticmethod
    def _first_due_after(tx: StoreTransaction, now: int) -> int | None:
        for key, _ in tx.iter_range(timer_upper_bound(now), TIMER_END):
            return parse_timer_key(key)[0]
        return None

    def _tx(self, part: _Partition) -> StoreTransaction:
        if part.tx is None:
            part.tx = StoreTransaction(part.store)
        return part.tx

    # -- one instance -------------------------------------------------------------------------

    def _load(
        self, batch: _Batch, part: _Partition, tx: StoreTransaction, iid: str
    ) -> Instance | None:
        inst = batch.touched.get(iid) or self.cache.get(iid)
        if inst is None:
            inst = load_instance(tx, iid, part.number)
            if inst is not None:
                self.cache.put(inst)
        return inst

    def _process_instance(
        self,
        batch: _Batch,
        part: _Partition,
        tx: StoreTransaction,
        iid: str,
        events: list[HistoryEvent],
    ) -> None:
        inst = self._load(batch, part, tx, iid)
        incoming: list[HistoryEvent] = []
        if (
            inst is not None
            and inst.state.pending_events
            and inst.state.status.runtime_status is RuntimeStatus.RUNNING
        ):
            # A generation start deferred by _step (see there) goes before anything new.
            incoming, inst.state.pending_events = inst.state.pending_events, []
            self._touch(batch, inst)
        for ev in events:
            kind = ev.kind
            if kind is K.EXECUTION_STARTED:
                if inst is not None and inst.state.status.runtime_status not in _TERMINAL:
                    log.warning(
                        "dropped a start of instance %r: it is already %s",
                        iid,
                        inst.state.status.runtime_status.value,
                    )
                    continue
                if incoming and inst is not None:
                    self._step(batch, tx, inst, incoming)
                    incoming = []
                inst = self._create(batch, part, tx, iid, ev, previous=inst)
                incoming.append(ev)
                continue
            if inst is None:
                log.warning("dropped %s for unknown instance %r", kind.value, iid)
                continue
            status = inst.state.status.runtime_status
            if kind is K.EXECUTION_PURGED:
                if status in _TERMINAL:
                    self._purge(batch, tx, inst)
                    inst = None
                else:
                    log.warning("dropped a purge of instance %r: it is %s", iid, status.value)
                continue
            if status in _TERMINAL:
                log.debug("dropped %s for finished instance %r", kind.value, iid)
                continue
            if kind is K.EXECUTION_TERMINATED:
                if incoming:
                    self._step(batch, tx, inst, incoming)
                    incoming = []
                if inst.state.status.runtime_status not in _TERMINAL:
                    self._terminate(batch, tx, inst, ev)
            elif kind is K.EXECUTION_SUSPENDED:
                if status is RuntimeStatus.RUNNING:
                    if incoming:
                        self._step(batch, tx, inst, incoming)
                        incoming = []
                    self._set_status(batch, inst, RuntimeStatus.SUSPENDED)
            elif kind is K.EXECUTION_RESUMED:
                if status is RuntimeStatus.SUSPENDED:
                    self._set_status(batch, inst, RuntimeStatus.RUNNING)
                    incoming.extend(inst.state.pending_events)
                    inst.state.pending_events = []
            elif status is RuntimeStatus.SUSPENDED:
                inst.state.pending_events.append(ev)
                self._touch(batch, inst)
            else:
                incoming.append(ev)
        if (
            incoming
            and inst is not None
            and inst.state.status.runtime_status is RuntimeStatus.RUNNING
        ):
            self._step(batch, tx, inst, incoming)

    def _create(
        self,
        batch: _Batch,
        part: _Partition,
        tx: StoreTransaction,
        iid: str,
        start: HistoryEvent,
        previous: Instance | None,
    ) -> Instance:
        if previous is not None:  # a finished instance started again under the same id
            self._delete_history(tx, previous)
        now = batch.now_ms
        status = OrchestrationStatus(
            iid,
            start.name or "",
            RuntimeStatus.RUNNING,
            start.payload,
            None,
            None,
            None,
            start.timestamp or now,
            now,
            start.instance_id,
        )
        inst = Instance(iid, part.number, InstanceState(status, parent_seq=start.seq))
        inst.status_dirty = True
        self.cache.put(inst)
        self._touch(batch, inst)
        return inst

    def _touch(self, batch: _Batch, inst: Instance) -> None:
        batch.touched[inst.instance_id] = inst

    def _executor(self, inst: Instance) -> OrchestrationExecutor:
        ex = inst.executor
        if ex is None:
            ex = OrchestrationExecutor(
                self.registry,
                inst.instance_id,
                inst.state.status.name,
                max_payload_bytes=self.settings.max_payload_bytes,
                generation=inst.state.generation,
            )
            ex.replay(inst.history)
            inst.executor = ex
        return ex

    def _step(
        self, batch: _Batch, tx: StoreTransaction, inst: Instance, incoming: list[HistoryEvent]
    ) -> None:
        for _ in range(MAX_GENERATIONS_PER_BATCH):
            ex = self._executor(inst)
            # Duplicate or late completions (a re-run activity, a fired timer of a
            # finished wait) are dropped before the engine sees them.
            new = [HistoryEvent(K.ORCHESTRATOR_STARTED, batch.now_ms)]
            new.extend(
                e for e in incoming if e.kind not in COMPLETION_KINDS or ex.is_waiting_for(e.seq)
            )
            if len(new) == 1 and ex.has_started:
                return
            result = ex.step(new)
            appended = new + result.actions
            if result.completion is not None:
                appended.append(result.completion)
            self._append_history(inst, appended)
            self._touch(batch, inst)
            for action in result.actions:
                self._route_action(batch, tx, inst, action)
            if result.custom_status != inst.state.status.serialized_custom_status:
                self._update_status(batch, inst, serialized_custom_status=result.custom_status)
            completion = result.completion
            if completion is None:
                return
            if completion.kind is K.CONTINUED_AS_NEW:
                incoming = self._continue_as_new(batch, tx, inst, completion, result.carried_events)
                continue
            self._finish(batch, inst, completion)
            return
        log.warning(
            "instance %r continued as new %d times in one batch; resuming later",
            inst.instance_id,
            MAX_GENERATIONS_PER_BATCH,
        )
        # The next generation's start waits in the header, and a timer due now wakes the
        # instance in the next iteration: both are store writes, so this survives a crash.
        inst.state.pending_events = [*incoming, *inst.state.pending_events]
        self._touch(batch, inst)
        tx.put(timer_key(batch.now_ms, inst.instance_id, WAKE_UP_SEQ), b"")
        part = self._owned[inst.partition]
        if part.next_timer_ms is None or batch.now_ms < part.next_timer_ms:
            part.next_timer_ms = batch.now_ms

    def _append_history(self, inst: Instance, events: list[HistoryEvent]) -> None:
        inst.history.extend(events)
        state = inst.state
        state.history_chunks += 1
        state.history_length += len(events)
        self._pending_chunks.setdefault(inst.instance_id, []).append(events)

    def _route_action(
        self, batch: _Batch, tx: StoreTransaction, inst: Instance, a: HistoryEvent
    ) -> None:
        iid = inst.instance_id
        kind = a.kind
        if kind is K.TASK_SCHEDULED:
            task = ActivityTask(iid, a.seq, 1, a.name or "", a.payload, batch.now_ms)
            local = self._local.start(task) if self._local is not None else None
            if local is not None:
                batch.local.append((inst.partition, local))
            else:
                self._produce_activity_task(batch, task)
        elif kind is K.TIMER_CREATED:
            due = a.fire_at or batch.now_ms
            tx.put(timer_key(due, iid, a.seq), b"")
            part = self._owned[inst.partition]
            if part.next_timer_ms is None or due < part.next_timer_ms:
                part.next_timer_ms = due
        elif kind is K.SUB_ORCHESTRATION_CREATED:
            child = a.instance_id or f"{iid}:{a.seq}"
            start = HistoryEvent(
                K.EXECUTION_STARTED,
                batch.now_ms,
                seq=a.seq,
                name=a.name,
                payload=a.payload,
                instance_id=iid,
            )
            self._send(batch, child, start)
        elif kind is K.EVENT_SENT and a.instance_id:
            self._send(
                batch,
                a.instance_id,
                HistoryEvent(K.EVENT_RAISED, batch.now_ms, name=a.name, payload=a.payload),
            )
        elif kind in ENTITY_ACTION_KINDS:
            self._entities.route_action(batch, iid, a)

    def _produce_activity_task(self, batch: _Batch, task: ActivityTask) -> None:
        key = task.instance_id.encode()
        batch.out.append(
            (
                self.topics.activities,
                partition_for(key, self._n_activities),
                key,
                encode_activity_task(task),
            )
        )

    def _run_local_activities(self, batch: _Batch) -> None:
        """Apply the results of activities run next to the processor, within this batch.

        Rounds repeat while results arrive (an orchestrator's next activity runs in
        the same batch too) until ``local_activity_wait_ms`` is spent; activities
        still running then go to ``H.activities`` for a worker, which adopts the
        running execution.
        """
        local = self._local
        assert local is not None
        deadline = time.monotonic() + local.wait_seconds
        while batch.local:
            started, batch.local = batch.local, []
            partition_of = {id(run): p for p, run in started}
            finished, unfinished = local.collect(
                [run for _, run in started], max(0.0, deadline - time.monotonic())
            )
            for run in unfinished:
                self._produce_activity_task(batch, run.task)
            results: dict[tuple[int, str], list[HistoryEvent]] = {}
            for run in finished:
                p = partition_of.get(id(run))
                if p is None or run.result is None:
                    continue  # left over from a batch that failed before collecting it
                key = (p, run.task.instance_id)
                events = results.get(key)
                if events is None:
                    results[key] = [run.result]
                else:
                    events.append(run.result)
            for (p, iid), events in results.items():
                part = self._owned.get(p)
                if part is None:
                    continue
                tx = self._tx(part)
                try:
                    self._process_instance(batch, part, tx, iid, events)
                except Exception as exc:
                    log.exception("internal error processing instance %r", iid)
                    self._fail_internally(batch, part, tx, iid, exc)
            if batch.local and time.monotonic() >= deadline:
                # The wait is spent: what the results just started goes to the worker.
                late = [run for _, run in batch.local]
                local.hand_off(late)
                for run in late:
                    self._produce_activity_task(batch, run.task)
                batch.local = []

    def _send(self, batch: _Batch, target: str, event: HistoryEvent) -> None:
        key = target.encode()
        batch.out.append(
            (
                self.topics.orchestrations,
                partition_for(key, self._n_orchestrations),
                key,
                encode_message(target, event),
            )
        )

    def _continue_as_new(
        self,
        batch: _Batch,
        tx: StoreTransaction,
        inst: Instance,
        completion: HistoryEvent,
        carried: list[HistoryEvent],
    ) -> list[HistoryEvent]:
        self._delete_history(tx, inst)
        inst.state.generation += 1
        inst.executor = None
        status = inst.state.status
        self._update_status(batch, inst, serialized_input=completion.payload)
        start = HistoryEvent(
            K.EXECUTION_STARTED,
            batch.now_ms,
            seq=inst.state.parent_seq,
            name=status.name,
            payload=completion.payload,
            instance_id=status.parent_instance_id,
        )
        return [start, *carried]

    def _delete_history(self, tx: StoreTransaction, inst: Instance) -> None:
        # Timers still pending (e.g. the cancelled loser of a when_any) would fire into
        # the next generation, whose sequence ids start at 0 again: they go too.
        fired = {e.seq for e in inst.history if e.kind is K.TIMER_FIRED}
        for e in inst.history:
            if e.kind is K.TIMER_CREATED and e.seq not in fired and e.fire_at is not None:
                key = timer_key(e.fire_at, inst.instance_id, e.seq)
                if tx.get(key) is not None:
                    tx.delete(key)
        for key, _ in list(tx.iter_prefix(history_prefix(inst.instance_id))):
            tx.delete(key)
        self._pending_chunks.pop(inst.instance_id, None)
        inst.history = []
        inst.state.history_chunks = 0
        inst.state.history_length = 0

    def _finish(self, batch: _Batch, inst: Instance, completion: HistoryEvent) -> None:
        inst.executor = None
        st = inst.state.status
        if completion.kind is K.EXECUTION_COMPLETED:
            self._update_status(
                batch,
                inst,
                runtime_status=RuntimeStatus.COMPLETED,
                serialized_output=completion.payload,
            )
        else:
            self._update_status(
                batch, inst, runtime_status=RuntimeStatus.FAILED, failure_details=completion.failure
            )
        if st.parent_instance_id:
            self._notify_parent(batch, inst, completion)
        self._entities.release_locks(batch, inst.instance_id, inst.history)

    def _notify_parent(self, batch: _Batch, inst: Instance, completion: HistoryEvent) -> None:
        parent = inst.state.status.parent_instance_id
        assert parent is not None
        if completion.kind is K.EXECUTION_COMPLETED:
            ev = HistoryEvent(
                K.SUB_ORCHESTRATION_COMPLETED,
                batch.now_ms,
                seq=inst.state.parent_seq,
                payload=completion.payload,
                instance_id=inst.instance_id,
            )
        else:
            ev = HistoryEvent(
                K.SUB_ORCHESTRATION_FAILED,
                batch.now_ms,
                seq=inst.state.parent_seq,
                failure=completion.failure,
                instance_id=inst.instance_id,
            )
        self._send(batch, parent, ev)

    def _purge(self, batch: _Batch, tx: StoreTransaction, inst: Instance) -> None:
        """Delete a finished instance: tombstones for its store keys and its status."""
        self._delete_history(tx, inst)
        tx.delete(instance_key(inst.instance_id))
        batch.touched.pop(inst.instance_id, None)
        self.cache.remove(inst.instance_id)
        key = inst.instance_id.encode()
        batch.out.append((self.topics.status, inst.partition, key, None))

    def _running_children(self, inst: Instance) -> list[str]:
        created: dict[int, str] = {}
        for e in inst.history:
            if e.kind is K.SUB_ORCHESTRATION_CREATED:
                created[e.seq] = e.instance_id or f"{inst.instance_id}:{e.seq}"
            elif e.kind is K.SUB_ORCHESTRATION_COMPLETED or e.kind is K.SUB_ORCHESTRATION_FAILED:
                created.pop(e.seq, None)
        return list(created.values())

    def _terminate(
        self, batch: _Batch, tx: StoreTransaction, inst: Instance, ev: HistoryEvent
    ) -> None:
        event = HistoryEvent(K.EXECUTION_TERMINATED, batch.now_ms, payload=ev.payload)
        # Running sub-orchestrations are terminated too (recursively, by the same path).
        for child in self._running_children(inst):
            self._send(
                batch, child, HistoryEvent(K.EXECUTION_TERMINATED, batch.now_ms, payload=ev.payload)
            )
        self._append_history(inst, [HistoryEvent(K.ORCHESTRATOR_STARTED, batch.now_ms), event])
        self._entities.release_locks(batch, inst.instance_id, inst.history)
        inst.executor = None
        self._update_status(
            batch, inst, runtime_status=RuntimeStatus.TERMINATED, serialized_output=ev.payload
        )
        if inst.state.status.parent_instance_id:
            failure = FailureDetails(
                "durafka.Terminated", f"terminated: {ev.payload.decode() if ev.payload else ''}"
            )
            self._notify_parent(
                batch, inst, HistoryEvent(K.EXECUTION_FAILED, batch.now_ms, failure=failure)
            )
        self._touch(batch, inst)

    def _fail_internally(
        self, batch: _Batch, part: _Partition, tx: StoreTransaction, iid: str, exc: Exception
    ) -> None:
        inst = batch.touched.get(iid) or self.cache.get(iid) or load_instance(tx, iid, part.number)
        if inst is None or inst.state.status.runtime_status in _TERMINAL:
            return
        self._pending_chunks.pop(iid, None)
        inst.executor = None
        failure = FailureDetails.from_exception(exc)
        failure = FailureDetails(
            failure.error_type, f"durafka internal error: {failure.message}", failure.stack_trace
        )
        self._append_history(
            inst, [HistoryEvent(K.EXECUTION_FAILED, batch.now_ms, failure=failure)]
        )
        self._entities.release_locks(batch, inst.instance_id, inst.history)
        self._update_status(
            batch, inst, runtime_status=RuntimeStatus.FAILED, failure_details=failure
        )
        self._touch(batch, inst)

    def _set_status(self, batch: _Batch, inst: Instance, status: RuntimeStatus) -> None:
        self._update_status(batch, inst, runtime_status=status)
        self._touch(batch, inst)

    def _update_status(self, batch: _Batch, inst: Instance, **changes: Any) -> None:
        current = inst.state.status
        new_runtime = changes.get("runtime_status", current.runtime_status)
        if inst.status_dirty and new_runtime is not current.runtime_status:
            # Every runtime-status change is published, even two within one batch
            # (e.g. RUNNING then COMPLETED when a local activity finished in it).
            key = inst.instance_id.encode()
            batch.out.append((self.topics.status, inst.partition, key, encode_status(current)))
        inst.state.status = replace(current, last_updated_at_ms=batch.now_ms, **changes)
        inst.status_dirty = True

    # -- writes and commit ----------------------------------------------------------------------

    def _emit_instance_writes(self, batch: _Batch) -> None:
        chunks = self._pending_chunks
        status_topic = self.topics.status
        for inst in batch.touched.values():
            part = self._owned.get(inst.partition)
            if part is None:
                continue
            tx = self._tx(part)
            state = inst.state
            new_chunks = chunks.pop(inst.instance_id, None)
            if new_chunks:
                # One chunk per instance per batch: fewer, larger records.
                merged = [e for c in new_chunks for e in c]
                state.history_chunks -= len(new_chunks) - 1
                tx.put(
                    history_key(inst.instance_id, state.history_chunks - 1), encode_chunk(merged)
                )
            tx.put(instance_key(inst.instance_id), encode_state(state))
            if inst.status_dirty:
                inst.status_dirty = False
                key = inst.instance_id.encode()
                batch.out.append((status_topic, inst.partition, key, encode_status(state.status)))
            if state.status.runtime_status in _TERMINAL:
                self.cache.demote(inst.instance_id)
        chunks.clear()

    def _commit(self, batch: _Batch) -> None:
        producer = self._producer
        changelog = self.topics.changelog
        self._changelog_offsets = {}
        self._delivery_error = None
        parts = [part for part in self._owned.values() if part.tx is not None]
        try:
            producer.begin_transaction()
            for topic, partition, key, value in batch.out:
                producer.produce(topic, partition, key, value)
            for part in parts:
                assert part.tx is not None
                on_delivery = self._changelog_delivered
                for key, value in part.tx.prepare().items():
                    producer.produce(changelog, part.number, key, value, on_delivery)
            remaining = producer.flush(30.0)
            if remaining:
                raise TransactionError(f"{remaining} records were not delivered before the commit")
            if batch.next_offsets:
                topic = self.topics.orchestrations
                producer.send_offsets(
                    {TopicPartition(topic, p): o for p, o in batch.next_offsets.items()},
                    self._consumer.group_metadata(),
                )
            producer.commit_transaction()
            if self._delivery_error is not None:
                raise TransactionError(f"a changelog record failed: {self._delivery_error}")
        except Exception as exc:
            self._rollback(batch, parts, exc)
            return
        for part in parts:
            assert part.tx is not None
            next_offset = self._changelog_offsets.get(part.number)
            part.tx.complete(next_offset)
            part.tx = None
        self.cache.trim()
        self.batches_committed += 1

    def _changelog_delivered(self, err: Any, record: Record) -> None:
        if err is not None:
            self._delivery_error = err
            return
        p = record.partition()
        off = record.offset()
        if p is not None and off is not None:
            prev = self._changelog_offsets.get(p, -1)
            if off + 1 > prev:
                self._changelog_offsets[p] = off + 1

    def _rollback(self, batch: _Batch, parts: list[_Partition], exc: Exception) -> None:
        log.warning("batch failed, reprocessing it: %s", exc)
        try:
            self._producer.abort_transaction()
        except Exception:
            log.warning("aborting the transaction failed", exc_info=True)
        affected = {part.number for part in parts} | set(batch.first_offsets)
        for part in parts:
            assert part.tx is not None
            part.tx.fail()
            part.tx = None
        self.cache.drop_partitions(affected)
        topic = self.topics.orchestrations
        for p, offset in batch.first_offsets.items():
            if p in self._owned:
                self._consumer.seek(TopicPartition(topic, p), offset)
        for p in affected:
            part_ = self._owned.get(p)
            if part_ is not None:
                part_.next_timer_ms = self._first_timer(part_.store)
        if isinstance(exc, TransactionError) and getattr(exc, "fatal", False):
            raise exc
