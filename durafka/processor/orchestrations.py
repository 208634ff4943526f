"""Orchestration instances within a batch: load, apply events, step, route, finish.

The processor loop (:mod:`durafka.processor.loop`) hands each instance's events
of a batch to :meth:`OrchestrationProcessor.process_instance`; at the end of the batch
:meth:`OrchestrationProcessor.emit_instance_writes` turns every touched instance into
store writes (header, history chunks) and status records. In between this
module owns the instance lifecycle: start (and restart of a finished id),
control events (terminate — children too —, suspend/resume, purge), one
orchestrator step per batch and instance, routing of its actions (activity
tasks, timers, child starts, events, entity operations), continue-as-new,
completion and the parent's notification, and the automatic purge of a
finished execution (a durable timer, :data:`PURGE_SEQ`).

Every record an instance makes must fit in one Kafka record
(:class:`~durafka.transport.limits.RecordLimits`): a batch's history is split
into as many chunks as needed; an instance whose header, status or single
history event cannot fit fails (:meth:`OrchestrationProcessor.fail_instance`) with the
sizes in its reason, and its FAILED status is cut to fit.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from durafka.activities.local import LocalActivities
from durafka.codec.records import (
    ActivityTask,
    InstanceState,
    decode_chunk,
    encode_chunks,
    encode_state,
    encode_state_and_status,
    encode_status,
)
from durafka.errors import (
    FailureDetails,
    RecordTooLargeError,
    RewindError,
    UpgradeRequiredError,
)
from durafka.ids import new_id
from durafka.observability import metrics
from durafka.observability.tracing import Tracing
from durafka.processor.batch import Batch, Outbox, PartitionBatch
from durafka.processor.entities import EntityProcessor
from durafka.processor.instances import Instance, InstanceCache, StoredValueError, load_instance
from durafka.processor.quarantine import quarantine
from durafka.processor.rejects import Rejects
from durafka.registry import Registry
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import (
    COMPLETION_KINDS,
    ENTITY_ACTION_KINDS,
    ORCHESTRATION_MESSAGE_KINDS,
    EventKind,
    HistoryEvent,
    IdReusePolicy,
    count_rewinds,
    reuse_allowed,
)
from durafka.runtime.rewind import plan_reset, plan_rewind, rewound_event
from durafka.settings import Settings
from durafka.state.keys import history_key, history_prefix, instance_key, timer_key
from durafka.state.transaction import StoreTransaction
from durafka.status import TERMINAL_STATUSES, OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord
from durafka.transport.limits import RecordLimits

log = logging.getLogger("durafka.processor")

#: Continue-as-new generations run back to back within one batch at most.
MAX_GENERATIONS_PER_BATCH = 100
#: Sequence id of the timer that wakes an instance whose next generation was deferred.
WAKE_UP_SEQ = -1
#: Sequence id of the timer that purges a finished execution (``finished_retention_ms``).
PURGE_SEQ = -2
#: The error type of an instance failed because a record of it cannot fit.
TOO_LARGE = "durafka.errors.RecordTooLargeError"
#: The ``reason`` label (metrics) of the dead letters of a quarantined instance.
_QUARANTINED = "InstanceQuarantinedError"
#: A failure message cut to this many characters when nothing else makes the status fit.
_LAST_RESORT_MESSAGE_CHARS = 1000


class OrchestrationProcessor:
    """Applies a batch's events to the orchestration instances of the owned partitions.

    Args:
        settings: the app's settings (payload limit).
        registry: the orchestrations and activities.
        topics: the task hub's topics.
        cache: the live instances.
        outbox: where messages and activity tasks go.
        entities: routes entity operations and releases locks of finished instances.
        local: runs activities next to the processor, when a worker is co-located.
        tracing: makes the spans of steps and ended executions (None: tracing is off).
        limits: the record size limit of each topic.
        rejects: dead-letters (or forwards) the events that cannot be applied.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        topics: HubTopics,
        cache: InstanceCache,
        outbox: Outbox,
        entities: EntityProcessor,
        local: LocalActivities | None,
        tracing: Tracing | None,
        limits: RecordLimits,
        rejects: Rejects,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.topics = topics
        self.cache = cache
        self._outbox = outbox
        self._entities = entities
        self._local = local
        self._tracing = tracing
        self._limits = limits
        #: Instances failed because a record of theirs could not fit, or was refused.
        self.failed_too_large = 0
        self._rejects = rejects
        #: Completions dropped before the engine saw them, by reason.
        self.dropped_completions: Counter[str] = Counter()
        #: Starts ignored: the id was running, or its finished execution was kept.
        self.ignored_starts = 0
        #: Executors rebuilt by replaying a history (a cache miss, a failed batch).
        self.replays = 0

    def _load(self, batch: Batch, share: PartitionBatch, iid: str) -> Instance | None:
        """The instance from the batch, the cache or the store (None: unknown).

        Raises:
            StoredValueError: a stored value is corrupt (the caller quarantines it).
            UpgradeRequiredError: a stored value is a newer release's.
        """
        inst = batch.touched.get(iid) or self.cache.get(iid)
        if inst is not None and inst.partition != share.number:
            # The cache is shared by the partitions: an event produced to the wrong
            # partition must not reach the instance from there (it is forwarded).
            inst = None
        if inst is None:
            try:
                inst = load_instance(share.tx, iid, share.number)
            except StoredValueError as exc:
                if exc.newer:
                    raise UpgradeRequiredError(
                        f"partition {share.number} stopped: {exc}. A newer durafka release "
                        "wrote it; upgrade this processor (nothing is lost: the partition "
                        "goes on once an upgraded processor takes it)",
                        partition=share.number,
                    ) from exc
                raise
            if inst is not None:
                self.cache.put(inst)
        return inst

    def _quarantine(
        self, batch: Batch, share: PartitionBatch, iid: str, error: StoredValueError
    ) -> str:
        """Fail ``iid``, whose stored state does not decode; the reason.

        See :mod:`durafka.processor.quarantine`.
        """
        q = quarantine(share.tx, iid, error, batch.now_ms)
        log.error("%s", q.reason)
        for key, value in q.stored:
            share.tx.delete(key)
            self._rejects.stored(share, key, value, q.reason, cause=_QUARANTINED)
        batch.pending_chunks.pop(iid, None)
        inst = Instance(iid, share.number, q.state)
        inst.status_dirty = True
        self._fit_failed(inst)
        self.cache.put(inst)
        self._touch(batch, inst)
        self._ended(share, inst, "failed", batch.now_ms)
        if q.state.status.parent_instance_id:
            failed = HistoryEvent(
                EventKind.EXECUTION_FAILED, batch.now_ms, failure=q.state.status.failure_details
            )
            self._notify_parent(share, inst, failed)
        return q.reason

    def process_instance(
        self, batch: Batch, share: PartitionBatch, iid: str, events: list[HistoryEvent]
    ) -> None:
        """Apply ``events`` (in order) to instance ``iid``: control events, then one step.

        A start creates the instance (or restarts a finished one); events arriving
        while it is suspended wait in its header; events for a finished instance are
        dropped (late results are normal). What cannot be applied is dead-lettered:
        events for an unknown instance (forwarded instead when they sit on the
        wrong partition), kinds orchestrations do not take, a purge of an instance
        that has not finished, and every event sent to an instance whose stored
        state turns out corrupt (which is quarantined).
        """
        try:
            inst = self._load(batch, share, iid)
        except StoredValueError as exc:
            reason = self._quarantine(batch, share, iid, exc)
            for ev in events:
                self._rejects.event(share, iid, ev, reason, cause=_QUARANTINED)
            return
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
            if kind not in ORCHESTRATION_MESSAGE_KINDS:
                self._rejects.event(
                    share,
                    iid,
                    ev,
                    f"orchestrations do not take {kind.value} messages ({iid!r})",
                    cause="InvalidMessageError",
                )
                continue
            if kind is EventKind.TIMER_FIRED and ev.seq == PURGE_SEQ:
                if inst is not None and self._purge_due(inst, ev):
                    self._purge(batch, share, inst)
                    inst = None
                continue
            if kind is EventKind.EXECUTION_STARTED:
                if inst is not None and not self._may_start_again(share, inst, ev):
                    continue
                if incoming and inst is not None:
                    self._step(batch, share, inst, incoming)
                    incoming = []
                if ev.execution_id is None:  # from a producer that does not choose one
                    ev = replace(ev, execution_id=new_id())
                if ev.version is None:  # new executions run the latest registered version
                    ev = replace(ev, version=self._latest_version(ev.name))
                inst = self._create(batch, share, iid, ev, previous=inst)
                incoming.append(ev)
                continue
            if inst is None:
                self._unknown_instance(share, iid, ev)
                continue
            status = inst.state.status.runtime_status
            if kind is EventKind.EXECUTION_PURGED:
                if status in TERMINAL_STATUSES:
                    self._purge(batch, share, inst)
                    inst = None
                else:
                    self._rejects.event(
                        share,
                        iid,
                        ev,
                        f"cannot purge instance {iid!r}: it is {status.value} (only finished "
                        "instances are purged)",
                        cause="InvalidMessageError",
                    )
                continue
            if kind is EventKind.EXECUTION_REWOUND or kind is EventKind.EXECUTION_RESET:
                if incoming and status is RuntimeStatus.RUNNING:
                    self._step(batch, share, inst, incoming)
                incoming = []
                if kind is EventKind.EXECUTION_REWOUND:
                    self._rewind(batch, share, inst, ev)
                else:
                    self._reset(batch, share, inst, ev)
                continue
            if status in TERMINAL_STATUSES:
                log.debug("dropped %s for finished instance %r", kind.value, iid)
                continue
            if kind is EventKind.EXECUTION_TERMINATED:
                if incoming:
                    self._step(batch, share, inst, incoming)
                    incoming = []
                if inst.state.status.runtime_status not in TERMINAL_STATUSES:
                    self._terminate(batch, share, inst, ev)
            elif kind is EventKind.EXECUTION_SUSPENDED:
                if status is RuntimeStatus.RUNNING:
                    if incoming:
                        self._step(batch, share, inst, incoming)
                        incoming = []
                    self._set_status(batch, inst, RuntimeStatus.SUSPENDED)
            elif kind is EventKind.EXECUTION_RESUMED:
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
            self._step(batch, share, inst, incoming)

    def _purge_due(self, inst: Instance, timer: HistoryEvent) -> bool:
        """Whether the purge timer of a finished execution may purge ``inst``: it is still
        finished, and it is still that execution (not started again since)."""
        state = inst.state
        if state.status.runtime_status not in TERMINAL_STATUSES:
            return False
        if timer.execution_id is not None and timer.execution_id != state.execution_token:
            return False
        log.debug("purging instance %r: finished_retention_ms has passed", inst.instance_id)
        return True

    def _unknown_instance(self, share: PartitionBatch, iid: str, ev: HistoryEvent) -> None:
        """An event for an instance this partition does not have: forward or dead-letter it.

        It may sit on the wrong partition (its producer does not partition with
        murmur2), where the instance can never be: forwarded to its partition. A
        timer of an instance that is gone (purged while it waited) is dropped.
        """
        origin = share.origin(ev)
        if origin is None and ev.kind is EventKind.TIMER_FIRED:
            log.debug("dropped a timer of unknown instance %r", iid)
            return
        if origin is not None:
            right = self._rejects.right_partition(iid.encode(), share.number)
            if right is not None:
                self._rejects.forward(share, origin, right)
                return
        self._rejects.event(
            share,
            iid,
            ev,
            f"{ev.kind.value} for unknown instance {iid!r}",
            cause="UnknownInstance",
        )

    def _may_start_again(self, share: PartitionBatch, inst: Instance, start: HistoryEvent) -> bool:
        """Whether ``start`` begins a new execution of an id that already has one.

        The same start delivered again (same execution id) is dropped silently; a
        start of a running id is refused; a finished one is started again as its
        id reuse policy says. A refused sub-orchestration start fails the parent's
        call, which would otherwise wait forever.
        """
        status = inst.state.status
        iid = inst.instance_id
        if start.execution_id is not None and start.execution_id == status.execution_id:
            log.debug("dropped a repeated start of instance %r (same execution)", iid)
            return False
        runtime = status.runtime_status
        if runtime not in TERMINAL_STATUSES:
            reason = f"instance {iid!r} is already {runtime.value}"
        elif reuse_allowed(start.id_reuse_policy, runtime):
            return True
        else:
            reason = (
                f"instance {iid!r} already ran and is {runtime.value}; its id reuse policy "
                f"{start.id_reuse_policy.value} keeps that execution"
            )
        self.ignored_starts += 1
        log.info("ignored a start: %s", reason)
        if start.instance_id is not None:  # a parent's call: tell it
            failure = FailureDetails("durafka.errors.InstanceAlreadyExistsError", reason)
            self._outbox.send(
                share,
                start.instance_id,
                HistoryEvent(
                    EventKind.SUB_ORCHESTRATION_FAILED,
                    share.now_ms,
                    seq=start.seq,
                    failure=failure,
                    instance_id=iid,
                    execution_id=start.parent_execution_id,
                ),
                iid,
            )
        return False

    def _create(
        self,
        batch: Batch,
        share: PartitionBatch,
        iid: str,
        start: HistoryEvent,
        previous: Instance | None,
    ) -> Instance:
        if previous is not None:  # a finished instance started again under the same id
            if previous.status_dirty:
                # It ended in this batch (e.g. terminated by a reset of its parent, which
                # starts it again right after): that end is published too.
                ended = encode_status(previous.state.status)
                record = OutgoingRecord(self.topics.status, previous.partition, iid.encode(), ended)
                share.emit(record, iid)
                previous.status_dirty = False
            self._delete_history(batch, share.tx, previous)
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
            start.execution_id,
        )
        state = InstanceState(
            status, parent_seq=start.seq, parent_execution_id=start.parent_execution_id
        )
        inst = Instance(iid, share.number, state)
        inst.status_dirty = True
        metrics.instance_started(share, status.name)
        self.cache.put(inst)
        self._touch(batch, inst)
        return inst

    def _latest_version(self, name: str | None) -> str | None:
        definition = self.registry.orchestrations.get(name or "")
        return definition.version if definition is not None else None

    def _touch(self, batch: Batch, inst: Instance) -> None:
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
            if inst.history:
                self.replays += 1
            ex.replay(inst.history)
            inst.executor = ex
        return ex

    def _step(
        self, batch: Batch, share: PartitionBatch, inst: Instance, incoming: list[HistoryEvent]
    ) -> None:
        for _ in range(MAX_GENERATIONS_PER_BATCH):
            ex = self._executor(inst)
            new = [HistoryEvent(EventKind.ORCHESTRATOR_STARTED, batch.now_ms)]
            token = inst.state.execution_token
            for e in incoming:
                if e.kind not in COMPLETION_KINDS or self._expected(inst, ex, token, e):
                    new.append(e)
            if len(new) == 1 and ex.has_started and not ex.has_new_actions:
                return
            status = inst.state.status
            span = (
                self._tracing.step(status.name, inst.instance_id, status.execution_id, share.number)
                if self._tracing is not None
                else None
            )
            started = time.perf_counter()
            result = ex.step(new)
            metrics.step_taken(share, status.name, time.perf_counter() - started)
            if ex.retried:
                metrics.retried(share, ex.retried)
                ex.retried.clear()
            appended = new + result.actions
            if result.completion is not None:
                appended.append(result.completion)
            self._append_history(batch, inst, appended)
            self._touch(batch, inst)
            headers = span.headers if span is not None else None
            for action in result.actions:
                self._route_action(batch, share, inst, action, headers)
            if span is not None:
                span.end()
            if result.custom_status != inst.state.status.serialized_custom_status:
                self._update_status(batch, inst, serialized_custom_status=result.custom_status)
            completion = result.completion
            if completion is None:
                return
            if completion.kind is EventKind.CONTINUED_AS_NEW:
                incoming = self._continue_as_new(
                    batch, share, inst, completion, result.carried_events
                )
                continue
            self._finish(batch, share, inst, completion)
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
        share.tx.put(timer_key(batch.now_ms, inst.instance_id, WAKE_UP_SEQ), b"")
        share.timer_stored(batch.now_ms)

    def _expected(
        self, inst: Instance, ex: OrchestrationExecutor, token: str | None, e: HistoryEvent
    ) -> bool:
        """Whether completion ``e`` is for this execution and a call it waits for.

        Late results of an earlier execution (sequence ids restart with each start
        and ``continue_as_new`` generation), duplicates (a re-run activity) and
        completions of the wrong kind are dropped and counted, before the engine
        sees them. A completion without an execution id (written by an older
        durafka) is matched on its sequence id and kind only.
        """
        if e.execution_id is not None and token is not None and e.execution_id != token:
            reason = "another execution"
        elif ex.is_waiting_for(e):
            return True
        else:
            reason = "not awaited"
        self.dropped_completions[reason] += 1
        log.debug(
            "dropped %s #%d for instance %r: %s", e.kind.value, e.seq, inst.instance_id, reason
        )
        return False

    def _append_history(self, batch: Batch, inst: Instance, events: list[HistoryEvent]) -> None:
        # ``history_chunks`` counts stored chunks: emit_instance_writes adds this batch's.
        inst.history.extend(events)
        inst.state.history_length += len(events)
        batch.pending_chunks.setdefault(inst.instance_id, []).append(events)

    def _discard_new_history(self, batch: Batch, inst: Instance) -> None:
        """Forget the history this batch appended (always the end of ``inst.history``)."""
        pending = batch.pending_chunks.pop(inst.instance_id, None)
        if pending:
            n = sum(len(events) for events in pending)
            del inst.history[len(inst.history) - n :]
            inst.state.history_length -= n

    def _route_action(
        self,
        batch: Batch,
        share: PartitionBatch,
        inst: Instance,
        a: HistoryEvent,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        iid = inst.instance_id
        kind = a.kind
        token = inst.state.execution_token
        if kind is EventKind.TASK_SCHEDULED:
            task = ActivityTask(
                iid,
                a.seq,
                1,
                a.name or "",
                a.payload,
                batch.now_ms,
                token,
                deadline=a.fire_at,
                heartbeat_timeout_ms=a.heartbeat_timeout_ms,
            )
            local = self._local.start(task) if self._local is not None else None
            if local is not None:
                batch.local.append((inst.partition, local))
            else:
                self._outbox.activity_task(share, task, headers)
        elif kind is EventKind.TIMER_CREATED:
            due = a.fire_at or batch.now_ms
            # The timer's value is the execution that waits for it (see TIMER_FIRED).
            share.tx.put(timer_key(due, iid, a.seq), token.encode() if token else b"")
            share.timer_stored(due)
        elif kind is EventKind.SUB_ORCHESTRATION_CREATED:
            child = a.instance_id or f"{iid}:{a.seq}"
            # Children are started as Temporal's child workflows are: a finished child
            # id is reused (default ids differ per execution anyway, see the executor).
            start = HistoryEvent(
                EventKind.EXECUTION_STARTED,
                batch.now_ms,
                seq=a.seq,
                name=a.name,
                payload=a.payload,
                instance_id=iid,
                execution_id=new_id(),
                parent_execution_id=token,
                id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE,
            )
            self._outbox.send(share, child, start, iid)
        elif kind is EventKind.EVENT_SENT and a.instance_id:
            self._outbox.send(
                share,
                a.instance_id,
                HistoryEvent(EventKind.EVENT_RAISED, batch.now_ms, name=a.name, payload=a.payload),
                iid,
            )
        elif kind in ENTITY_ACTION_KINDS:
            self._entities.route_action(share, iid, token, a)

    def _continue_as_new(
        self,
        batch: Batch,
        share: PartitionBatch,
        inst: Instance,
        completion: HistoryEvent,
        carried: list[HistoryEvent],
    ) -> list[HistoryEvent]:
        self._delete_history(batch, share.tx, inst)
        inst.state.generation += 1
        inst.executor = None
        status = inst.state.status
        self._update_status(batch, inst, serialized_input=completion.payload)
        start = HistoryEvent(
            EventKind.EXECUTION_STARTED,
            batch.now_ms,
            seq=inst.state.parent_seq,
            name=status.name,
            payload=completion.payload,
            instance_id=status.parent_instance_id,
            execution_id=status.execution_id,
            parent_execution_id=inst.state.parent_execution_id,
            # A new generation starts on the latest version, as a new execution does.
            version=self._latest_version(status.name),
        )
        return [start, *carried]

    def _delete_pending_timers(self, tx: StoreTransaction, inst: Instance) -> None:
        """Delete the timers of ``inst`` that have not fired (e.g. a when_any's loser).

        Called when an execution ends: in a finished instance they would only wait,
        possibly for days, to be dropped on firing; into a continued-as-new
        generation, whose sequence ids start at 0 again, they would fire wrongly.
        """
        pending: dict[int, int] = {}
        for e in inst.history:
            kind = e.kind
            if kind is EventKind.TIMER_CREATED and e.fire_at is not None:
                pending[e.seq] = e.fire_at
            elif kind is EventKind.TIMER_FIRED:
                pending.pop(e.seq, None)
        for seq, due in pending.items():
            key = timer_key(due, inst.instance_id, seq)
            if tx.get(key) is not None:
                tx.delete(key)

    def _delete_history(self, batch: Batch, tx: StoreTransaction, inst: Instance) -> None:
        self._delete_pending_timers(tx, inst)
        for key, _ in list(tx.iter_prefix(history_prefix(inst.instance_id))):
            tx.delete(key)
        batch.pending_chunks.pop(inst.instance_id, None)
        inst.history = []
        inst.state.history_chunks = 0
        inst.state.history_length = 0
        inst.state.rewinds = 0

    def _finish(
        self, batch: Batch, share: PartitionBatch, inst: Instance, completion: HistoryEvent
    ) -> None:
        st = inst.state.status
        completed = completion.kind is EventKind.EXECUTION_COMPLETED
        self._ended(share, inst, "completed" if completed else "failed", batch.now_ms)
        if completed:
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
            self._notify_parent(share, inst, completion)
        self._end_execution(share, inst)

    def _end_execution(self, share: PartitionBatch, inst: Instance) -> None:
        """Let go of what an ended execution still holds: executor, entity locks, timers.

        The one place every ending (completed, failed, terminated, failed
        internally) goes through, so none of them leaves a lock or a timer behind;
        and the one that sets the purge timer of the execution.
        """
        inst.executor = None
        self._entities.release_locks(share, inst.instance_id, inst.history)
        self._delete_pending_timers(share.tx, inst)
        retention = self.settings.finished_retention_ms
        if retention:
            # A durable timer, so the changelog keeps what is live: the purge happens
            # unless the id is started again meanwhile (the timer names this execution).
            due = share.now_ms + retention
            token = inst.state.execution_token
            share.tx.put(
                timer_key(due, inst.instance_id, PURGE_SEQ), token.encode() if token else b""
            )
            share.timer_stored(due)

    def _ended(self, share: PartitionBatch, inst: Instance, status: str, now_ms: int) -> None:
        """An execution ended (``completed``, ``failed``, ``terminated``): metrics, its span."""
        st = inst.state.status
        metrics.instance_ended(share, st.name, status, st.created_at_ms, now_ms)
        if self._tracing is not None:
            self._tracing.ended(
                st.name, inst.instance_id, st.execution_id, status, st.created_at_ms, now_ms
            )

    def _notify_parent(
        self, share: PartitionBatch, inst: Instance, completion: HistoryEvent
    ) -> None:
        parent = inst.state.status.parent_instance_id
        assert parent is not None
        if completion.kind is EventKind.EXECUTION_COMPLETED:
            ev = HistoryEvent(
                EventKind.SUB_ORCHESTRATION_COMPLETED,
                share.now_ms,
                seq=inst.state.parent_seq,
                payload=completion.payload,
                instance_id=inst.instance_id,
                execution_id=inst.state.parent_execution_id,
            )
        else:
            ev = HistoryEvent(
                EventKind.SUB_ORCHESTRATION_FAILED,
                share.now_ms,
                seq=inst.state.parent_seq,
                failure=completion.failure,
                instance_id=inst.instance_id,
                execution_id=inst.state.parent_execution_id,
            )
        self._outbox.send(share, parent, ev, inst.instance_id)

    def _purge(self, batch: Batch, share: PartitionBatch, inst: Instance) -> None:
        """Delete a finished instance: tombstones for its store keys and its status."""
        self._delete_history(batch, share.tx, inst)
        share.tx.delete(instance_key(inst.instance_id))
        batch.touched.pop(inst.instance_id, None)
        self.cache.remove(inst.instance_id)
        key = inst.instance_id.encode()
        share.emit(OutgoingRecord(self.topics.status, inst.partition, key, None), inst.instance_id)

    # -- repairs: rewind and reset (durafka/runtime/rewind.py plans them) ---------------

    def _rewind(
        self, batch: Batch, share: PartitionBatch, inst: Instance, ev: HistoryEvent
    ) -> None:
        """Rewind a failed instance, or re-attach a child to its rewound or reset parent.

        A client's rewind carries only a reason. A parent's carries its id and new
        token: the child answers to that token from now on, reports again a result
        the parent's old execution dropped, and rewinds itself if it failed (or
        reports the failure again when it cannot be rewound).
        """
        iid = inst.instance_id
        status = inst.state.status
        runtime = status.runtime_status
        from_parent = ev.instance_id is not None and ev.parent_execution_id is not None
        if from_parent:
            if ev.instance_id != status.parent_instance_id:
                log.warning("dropped a rewind of %r from %r, not its parent", iid, ev.instance_id)
                return
            inst.state.parent_execution_id = ev.parent_execution_id
            self._touch(batch, inst)
            if runtime is RuntimeStatus.COMPLETED:
                done = HistoryEvent(
                    EventKind.EXECUTION_COMPLETED, batch.now_ms, payload=status.serialized_output
                )
                self._notify_parent(share, inst, done)
                return
            if runtime is RuntimeStatus.TERMINATED:
                self._notify_parent(share, inst, self._terminated_failure(batch, status))
                return
            if runtime is not RuntimeStatus.FAILED:
                return  # still active: it reports to the new token when it ends
        elif runtime is not RuntimeStatus.FAILED:
            log.warning("dropped a rewind of instance %r: it is %s", iid, runtime.value)
            return
        try:
            retried = plan_rewind(
                self.registry,
                iid,
                inst.history,
                generation=inst.state.generation,
                max_payload_bytes=self.settings.max_payload_bytes,
            )
        except RewindError as exc:
            log.warning("refused a rewind: %s", exc)
            if from_parent:
                failed = HistoryEvent(
                    EventKind.EXECUTION_FAILED, batch.now_ms, failure=status.failure_details
                )
                self._notify_parent(share, inst, failed)
            return
        reason = (
            f"parent {ev.instance_id} was rewound or reset" if from_parent else _text(ev.payload)
        )
        now = batch.now_ms
        self._append_history(
            batch,
            inst,
            [
                HistoryEvent(EventKind.ORCHESTRATOR_STARTED, now),
                rewound_event(now, reason, retried),
            ],
        )
        # A new token: what the failed attempt still delivers is dropped.
        inst.state.rewinds += 1
        self._update_status(batch, inst, runtime_status=RuntimeStatus.RUNNING, failure_details=None)
        self._touch(batch, inst)
        inst.executor = None
        self._reissue(batch, share, inst)
        self._step(batch, share, inst, [])  # calls the replay made that were not recorded

    def _reset(self, batch: Batch, share: PartitionBatch, inst: Instance, ev: HistoryEvent) -> None:
        """Start a new execution that replays the history up to event ``ev.seq`` and goes on.

        The current execution ends (terminated, reason "reset", if it was still
        active): its children started after the point are terminated, its entity
        locks released, its timers deleted; what it has in flight carries its old
        token and is dropped. Calls pending at the point are issued again.
        """
        iid = inst.instance_id
        status = inst.state.status
        execution = ev.execution_id or new_id()
        if execution == status.execution_id:
            log.debug("dropped a repeated reset of instance %r", iid)
            return
        try:
            plan = plan_reset(
                self.registry,
                iid,
                inst.history,
                ev.seq,
                generation=inst.state.generation,
                max_payload_bytes=self.settings.max_payload_bytes,
            )
        except RewindError as exc:
            log.warning("refused a reset: %s", exc)
            return
        now = batch.now_ms
        if status.runtime_status not in TERMINAL_STATUSES:
            kept = {
                e.instance_id or f"{iid}:{e.seq}"
                for e in plan.prefix
                if e.kind is EventKind.SUB_ORCHESTRATION_CREATED
            }
            reason = json.dumps("reset").encode()
            for child in self._running_children(inst):
                if child not in kept:
                    self._outbox.send(
                        share,
                        child,
                        HistoryEvent(EventKind.EXECUTION_TERMINATED, now, payload=reason),
                        iid,
                    )
            self._end_execution(share, inst)
            self._update_status(
                batch, inst, runtime_status=RuntimeStatus.TERMINATED, serialized_output=reason
            )
        reapplied = [*plan.reapplied, *inst.state.pending_events]
        inst.state.pending_events = []
        rest = self._truncate_history(batch, share.tx, inst, len(plan.prefix))
        marker = HistoryEvent(
            EventKind.EXECUTION_RESET, now, seq=ev.seq, execution_id=execution, payload=ev.payload
        )
        self._append_history(
            batch, inst, [*rest, HistoryEvent(EventKind.ORCHESTRATOR_STARTED, now), marker]
        )
        inst.state.rewinds = count_rewinds(plan.prefix)
        self._update_status(
            batch,
            inst,
            runtime_status=RuntimeStatus.RUNNING,
            execution_id=execution,
            serialized_output=None,
            failure_details=None,
        )
        self._touch(batch, inst)
        inst.executor = None
        self._reissue(batch, share, inst)
        # A step: the re-applied events, and the calls the code makes after the point.
        self._step(batch, share, inst, reapplied)

    def _truncate_history(
        self, batch: Batch, tx: StoreTransaction, inst: Instance, keep: int
    ) -> list[HistoryEvent]:
        """Cut the history to its first ``keep`` events; the kept events to write again.

        Stored chunks wholly before the cut stay as they are (a long prefix is not
        rewritten as one record, and stays readable as of earlier times); the
        others are deleted, and the kept events they held are returned.
        """
        self._delete_pending_timers(tx, inst)
        batch.pending_chunks.pop(inst.instance_id, None)
        kept_chunks = kept_events = 0
        cutting = False
        for key, value in list(tx.iter_prefix(history_prefix(inst.instance_id))):
            size = len(decode_chunk(value))
            if not cutting and kept_events + size <= keep:
                kept_chunks += 1
                kept_events += size
            else:
                cutting = True
                tx.delete(key)
        state = inst.state
        state.history_chunks, state.history_length = kept_chunks, kept_events
        rest = inst.history[kept_events:keep]
        inst.history = inst.history[:kept_events]
        return rest

    def _reissue(self, batch: Batch, share: PartitionBatch, inst: Instance) -> None:
        """Issue again, with the current token, every recorded call the replayed code waits for.

        Activities run again (at-least-once), timers are stored again at their
        recorded due time, children are re-attached (see :meth:`_rewind`).
        """
        ex = self._executor(inst)
        recorded = {
            e.seq: e
            for e in inst.history
            if e.kind in (EventKind.TASK_SCHEDULED, EventKind.TIMER_CREATED)
            or e.kind is EventKind.SUB_ORCHESTRATION_CREATED
        }
        iid = inst.instance_id
        for seq, kind in sorted(ex.pending_calls().items()):
            action = recorded.get(seq)
            if action is None or action.kind is not kind:
                continue  # taken by the replay but not recorded: the next step emits it
            if kind is EventKind.SUB_ORCHESTRATION_CREATED:
                reattach = HistoryEvent(
                    EventKind.EXECUTION_REWOUND,
                    batch.now_ms,
                    seq=seq,
                    instance_id=iid,
                    parent_execution_id=inst.state.execution_token,
                )
                self._outbox.send(share, action.instance_id or f"{iid}:{seq}", reattach, iid)
            else:
                self._route_action(batch, share, inst, action)

    @staticmethod
    def _terminated_failure(batch: Batch, status: OrchestrationStatus) -> HistoryEvent:
        reason = _text(status.serialized_output)
        failure = FailureDetails("durafka.Terminated", f"terminated: {reason}")
        return HistoryEvent(EventKind.EXECUTION_FAILED, batch.now_ms, failure=failure)

    def _running_children(self, inst: Instance) -> list[str]:
        created: dict[int, str] = {}
        for e in inst.history:
            if e.kind is EventKind.SUB_ORCHESTRATION_CREATED:
                created[e.seq] = e.instance_id or f"{inst.instance_id}:{e.seq}"
            elif (
                e.kind is EventKind.SUB_ORCHESTRATION_COMPLETED
                or e.kind is EventKind.SUB_ORCHESTRATION_FAILED
            ):
                created.pop(e.seq, None)
        return list(created.values())

    def _terminate(
        self, batch: Batch, share: PartitionBatch, inst: Instance, ev: HistoryEvent
    ) -> None:
        event = HistoryEvent(EventKind.EXECUTION_TERMINATED, batch.now_ms, payload=ev.payload)
        # Running sub-orchestrations are terminated too (recursively, by the same path).
        for child in self._running_children(inst):
            self._outbox.send(
                share,
                child,
                HistoryEvent(EventKind.EXECUTION_TERMINATED, batch.now_ms, payload=ev.payload),
                inst.instance_id,
            )
        self._append_history(
            batch, inst, [HistoryEvent(EventKind.ORCHESTRATOR_STARTED, batch.now_ms), event]
        )
        self._end_execution(share, inst)
        self._ended(share, inst, "terminated", batch.now_ms)
        self._update_status(
            batch, inst, runtime_status=RuntimeStatus.TERMINATED, serialized_output=ev.payload
        )
        if inst.state.status.parent_instance_id:
            self._notify_parent(share, inst, self._terminated_failure(batch, inst.state.status))
        self._touch(batch, inst)

    def fail_internally(
        self, batch: Batch, share: PartitionBatch, iid: str, exc: Exception
    ) -> bool:
        """Fail instance ``iid`` with durafka's own error (a bug must not crash-loop a record).

        Returns:
            Whether the instance took the failure (see :meth:`fail_instance`): False
            when it is unknown or had finished already (its events are then the
            caller's to dead-letter).

        Raises:
            UpgradeRequiredError: its stored state is a newer release's.
        """
        failure = FailureDetails.from_exception(exc)
        failure = FailureDetails(
            failure.error_type, f"durafka internal error: {failure.message}", failure.stack_trace
        )
        return self.fail_instance(batch, share, iid, failure)

    def fail_instance(
        self, batch: Batch, share: PartitionBatch, iid: str, failure: FailureDetails
    ) -> bool:
        """Fail instance ``iid`` with ``failure``, undoing what it did in this batch.

        Its records and history of this batch are dropped (they may be what could
        not be written), its timers deleted, its locks released, its parent told,
        its purge timer set (as every ending does: :meth:`_end_execution`);
        its FAILED status is cut to fit (:meth:`_fit_failed`). An instance that
        finished before this batch is left alone; one whose stored state does not
        decode is quarantined instead (:mod:`durafka.processor.quarantine`).

        Returns:
            Whether it was failed (or quarantined).

        Raises:
            UpgradeRequiredError: its stored state is a newer release's.
        """
        touched = iid in batch.touched
        try:
            inst = self._load(batch, share, iid)
        except StoredValueError as error:
            self._quarantine(batch, share, iid, error)
            return True
        if inst is None:
            return False
        if not touched and inst.state.status.runtime_status in TERMINAL_STATUSES:
            return False
        self._delete_pending_timers(share.tx, inst)  # the batch's own timers too
        share.discard(iid)
        self._discard_new_history(batch, inst)
        inst.state.pending_events = []
        inst.state.status = replace(
            inst.state.status,
            runtime_status=RuntimeStatus.FAILED,
            serialized_output=None,
            failure_details=failure.bounded(),
            last_updated_at_ms=batch.now_ms,
        )
        inst.status_dirty = True
        self._fit_failed(inst)
        failure = inst.state.status.failure_details or failure
        self._append_history(
            batch, inst, [HistoryEvent(EventKind.EXECUTION_FAILED, batch.now_ms, failure=failure)]
        )
        self._end_execution(share, inst)  # locks of the history that stays, the purge timer
        self._ended(share, inst, "failed", batch.now_ms)
        if inst.state.status.parent_instance_id:
            self._notify_parent(
                share,
                inst,
                HistoryEvent(EventKind.EXECUTION_FAILED, batch.now_ms, failure=failure),
            )
        self._touch(batch, inst)
        return True

    def _fit_failed(self, inst: Instance) -> None:
        """Cut a FAILED instance's status until it and the header fit their records.

        Left out, in this order, each noted in the status's failure message: the
        custom status, the input, the stack trace; last, the message is cut.
        """
        state = inst.state
        for cut in ("custom status", "input", "stack trace", "message"):
            status = state.status
            if not self._instance_records_too_large(inst):
                return
            failure = status.failure_details
            assert failure is not None
            if cut == "custom status" and status.serialized_custom_status is not None:
                size = len(status.serialized_custom_status)
                status = replace(status, serialized_custom_status=None)
            elif cut == "input" and status.serialized_input is not None:
                size = len(status.serialized_input)
                status = replace(status, serialized_input=None)
            elif cut == "stack trace" and failure.stack_trace is not None:
                size = len(failure.stack_trace)
                failure = replace(failure, stack_trace=None)
            elif cut == "message":
                size = len(failure.message)
                failure = replace(failure, message=failure.message[:_LAST_RESORT_MESSAGE_CHARS])
            else:
                continue
            note = f" [the status leaves out its {cut} of {size:,} bytes to fit in a record]"
            state.status = replace(
                status, failure_details=replace(failure, message=failure.message + note)
            )

    def _instance_records_too_large(self, inst: Instance) -> RecordTooLargeError | None:
        """Why the header or status of ``inst`` does not fit in a record (None: they fit)."""
        iid = inst.instance_id
        state = inst.state
        status = state.status
        encoded = encode_status(status)
        room = self._limits.room(self.topics.status, iid.encode())
        if len(encoded) > room:
            return RecordTooLargeError(
                f"status too large: the {status.runtime_status.value} status of instance "
                f"{iid!r} is {len(encoded):,} bytes ({_status_sizes(state)}), more than the "
                f"{room:,} bytes a record of {self.topics.status} may hold"
            )
        header = encode_state(state)
        room = self._limits.room(self.topics.changelog, instance_key(iid))
        if len(header) > room:
            held = sum(len(e.payload or b"") for e in state.pending_events)
            return RecordTooLargeError(
                f"instance state too large: the header of instance {iid!r} is "
                f"{len(header):,} bytes ({_status_sizes(state)}; "
                f"{len(state.pending_events):,} events held back with {held:,} bytes of "
                f"payload), more than the {room:,} bytes a record of {self.topics.changelog} "
                "may hold"
            )
        return None

    def _set_status(self, batch: Batch, inst: Instance, status: RuntimeStatus) -> None:
        self._update_status(batch, inst, runtime_status=status)
        self._touch(batch, inst)

    def _update_status(self, batch: Batch, inst: Instance, **changes: Any) -> None:
        current = inst.state.status
        new_runtime = changes.get("runtime_status", current.runtime_status)
        if inst.status_dirty and new_runtime is not current.runtime_status:
            # Every runtime-status change is published, even two within one batch
            # (e.g. RUNNING then COMPLETED when a local activity finished in it).
            key = inst.instance_id.encode()
            batch.partitions[inst.partition].emit(
                OutgoingRecord(self.topics.status, inst.partition, key, encode_status(current)),
                inst.instance_id,
            )
        inst.state.status = replace(current, last_updated_at_ms=batch.now_ms, **changes)
        inst.status_dirty = True

    def emit_instance_writes(self, batch: Batch) -> None:
        """Write every touched instance: header, history chunks, its status if changed.

        An instance whose records cannot fit is failed (see the module docstring);
        the records of its failure always fit.
        """
        for inst in list(batch.touched.values()):
            share = batch.partitions[inst.partition]
            try:
                self._write(batch, share, inst)
            except RecordTooLargeError as exc:
                log.warning("failing instance %r: %s", inst.instance_id, exc)
                self.failed_too_large += 1
                failure = FailureDetails(TOO_LARGE, str(exc))
                self.fail_instance(batch, share, inst.instance_id, failure)
                try:
                    self._write(batch, share, inst)
                except RecordTooLargeError as again:
                    # Only a record size limit far below Kafka's defaults gets here:
                    # nothing of the instance is written, the partition goes on.
                    log.error("instance %r cannot be stored failed: %s", inst.instance_id, again)
                    share.discard(inst.instance_id)
                    batch.pending_chunks.pop(inst.instance_id, None)
                    self.cache.remove(inst.instance_id)
        batch.pending_chunks.clear()

    def _write(self, batch: Batch, share: PartitionBatch, inst: Instance) -> None:
        """Emit the store writes and status of ``inst``, or raise before emitting any.

        The history appended in this batch becomes as many chunks as it needs
        (usually one), after the chunks already stored.

        Raises:
            RecordTooLargeError: a single history event, the header or the status is
                larger than a record may be ("history too large", ... with the sizes).
        """
        iid = inst.instance_id
        state = inst.state
        new = batch.pending_chunks.get(iid)
        chunks: list[bytes] = []
        stored = state.history_chunks
        if new:
            merged = new[0] if len(new) == 1 else [e for events in new for e in events]
            room = self._limits.room(self.topics.changelog, history_key(iid, stored))
            try:
                chunks = encode_chunks(merged, room)
            except RecordTooLargeError as exc:
                raise RecordTooLargeError(f"history too large: instance {iid!r}: {exc}") from None
        state.history_chunks = stored + len(chunks)
        key = instance_key(iid)
        header, status = encode_state_and_status(state, with_status=inst.status_dirty)
        if len(header) > self._limits.room(self.topics.changelog, key) or (
            status is not None and len(status) > self._limits.room(self.topics.status, iid.encode())
        ):
            state.history_chunks = stored
            raise self._instance_records_too_large(inst) or RecordTooLargeError(iid)
        tx = share.tx
        for i, chunk in enumerate(chunks):
            tx.put(history_key(iid, stored + i), chunk)
        batch.pending_chunks.pop(iid, None)
        tx.put(key, header)
        if status is not None:
            inst.status_dirty = False
            record = OutgoingRecord(self.topics.status, inst.partition, iid.encode(), status)
            share.emit(record, iid)
        if state.status.runtime_status in TERMINAL_STATUSES:
            self.cache.demote(iid)


def _status_sizes(state: InstanceState) -> str:
    """The sizes of what a status holds, for a "too large" message."""
    status = state.status
    failure = status.failure_details
    failure_size = (
        0
        if failure is None
        else len(failure.error_type) + len(failure.message) + len(failure.stack_trace or "")
    )
    return (
        f"input {len(status.serialized_input or b''):,}, "
        f"output {len(status.serialized_output or b''):,}, "
        f"custom status {len(status.serialized_custom_status or b''):,}, "
        f"failure {failure_size:,} bytes"
    )


def _text(payload: bytes | None) -> str:
    """A reason payload (a JSON string) as text; anything else as its JSON."""
    if payload is None:
        return ""
    try:
        value = json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")
    return value if isinstance(value, str) else json.dumps(value)
