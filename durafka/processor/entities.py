"""Entities in the processor: operations, queues, the lock protocol and entity records.

An entity ``@<name>@<key>`` lives on the partition of ``H.orchestrations`` its id
hashes to, next to orchestrations. The processor hands every batch's events for
one entity to :meth:`EntityProcessor.process`, in partition order, so an
entity runs one operation at a time. Everything an operation does (new state,
response, signals, the entity's record on ``H.entities`` and in the changelog)
goes into the batch's Kafka transaction: exactly once per operation.

Store: one record per entity, ``e/<id>`` (Avro ``EntityState``): the state
(JSON), the lock holder, the operations and lock requests waiting for the lock,
and the error count. The same record is published on the compacted topic
``H.entities`` (key: entity id); an entity without state, lock or queue is
deleted (store tombstone, ``None`` value on ``H.entities``).

Locks (``ctx.lock(a, b, c)``), deadlock-free because every request takes the
entities in the same (sorted id) order:

1. the orchestration's LOCK_REQUESTED goes to the first entity of the sorted list;
2. an unlocked entity locks itself for the requester and forwards the request
   to the next entity; a locked one queues it (in order, with the operations
   of others);
3. the last entity sends LOCK_GRANTED (the request's ``seq``) to the orchestration;
4. while locked, an entity runs only the holder's operations; others queue;
5. at the end of the block the orchestration sends LOCK_RELEASED to every
   entity; each unlocks and runs what queued up, in order, until the next
   lock request locks it again.

If the orchestration ends (completes, fails, is terminated) with a lock not
released, the processor releases it: directly if history shows it granted,
else by a release that follows the request's path from the first entity (an
entity that holds the lock unlocks and forwards it; one where the request still
waits drops the request and stops it), so a request still travelling is never
overtaken by its release.

Poison: a message the entity cannot apply (a malformed lock request or release,
a signal to an unregistered entity, a kind entities do not take) or whose
processing raises (a bug) is taken out alone: the entity's record and the
batch's output go back to what they were before that message, the message is
dead-lettered with the reason, and a caller waiting for it gets an error (a call
its ``ENTITY_RESPONSE``, a lock request a ``LOCK_GRANTED`` carrying the failure,
which ``ctx.lock`` raises as :class:`~durafka.errors.EntityLockFailed`). The
entity's other messages of the batch apply. An entity record in the store that
does not decode quarantines the entity: every message to it is dead-lettered
(callers get the error) except a delete, which removes the record (dead-lettering
its bytes); one written by a newer release stops the partition instead.

Size: an entity's record must fit in one Kafka record (the smaller limit of the
changelog and ``H.entities``), less :data:`RESERVE` kept for its last error. An
operation whose new state would make it larger fails (rolled back, like an
operation that raises): a caller gets ``EntityOperationFailed`` with the sizes,
a signal is counted in ``error_count`` with the reason in ``last_error``. An
operation or lock request that cannot be queued behind a lock because the queue
would not fit never runs: a call is answered with that failure, a signal or a
lock request is dead-lettered (it can be produced again once the queue drained).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from durafka.codec.newer import written_by_newer_release
from durafka.codec.records import EntityRecord, decode_entity, encode_entity, event_size
from durafka.entities import DELETE_OPERATION, EntityId
from durafka.errors import (
    FailureDetails,
    InvalidMessageError,
    UnknownSchemaError,
    UpgradeRequiredError,
)
from durafka.observability import metrics
from durafka.processor.batch import PartitionBatch
from durafka.processor.rejects import Rejects
from durafka.registry import Registry
from durafka.runtime.entity_executor import OperationOutcome, run_operation
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import entity_key
from durafka.state.transaction import StoreTransaction
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord
from durafka.transport.limits import RecordLimits

__all__ = ["EntityProcessor", "open_lock"]

log = logging.getLogger("durafka.processor.entities")


#: ``send(share, target instance or entity id, event, source)``: a message on
#: ``H.orchestrations``, made by ``source`` (the entity or orchestration).
Send = Callable[[Any, str, HistoryEvent, str], None]

#: Room kept in an entity's record beyond its state and queue, for its last error
#: (cut to fit it when needed) and the lock protocol's messages.
RESERVE: Final = 16_384
#: What an operation's record bound adds to state, queue and strings (lengths, numbers).
_SLACK: Final = 128


def _ids(payload: bytes | None) -> list[str]:
    """The entity ids of a lock request or release (a JSON list of strings).

    Raises:
        InvalidMessageError: the payload is not a JSON list of strings.
    """
    if payload is None:
        return []
    try:
        ids = json.loads(payload)
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidMessageError(
            f"the lock payload {payload[:100]!r} is not a JSON list of entity ids"
        )
    return ids


def open_lock(history: list[HistoryEvent]) -> tuple[list[str], bool] | None:
    """The lock an orchestration requested and did not release: ``(ids, granted)``.

    Locks do not nest, so a LOCK_RELEASED closes the latest LOCK_REQUESTED.
    """
    current: tuple[int, list[str]] | None = None
    granted: set[int] = set()
    for e in history:
        kind = e.kind
        if kind is EventKind.LOCK_REQUESTED:
            current = (e.seq, _ids(e.payload))
        elif kind is EventKind.LOCK_GRANTED:
            granted.add(e.seq)
        elif kind is EventKind.LOCK_RELEASED:
            current = None
    if current is None or not current[1]:
        return None
    return current[1], current[0] in granted


class _Run:
    """One entity within one batch: its record, whether it changed, how large it may grow.

    ``room`` is the largest record value its keys allow; ``queue_bytes`` what its
    queued operations take in the record.
    """

    __slots__ = ("batch", "dirty", "entity", "entity_id", "queue_bytes", "record", "room")

    def __init__(
        self, batch: PartitionBatch, entity: EntityId, record: EntityRecord, room: int
    ) -> None:
        self.batch = batch
        self.entity = entity
        self.entity_id = str(entity)
        self.record = record
        self.dirty = False
        self.room = room
        self.queue_bytes = sum(event_size(e) for e in record.queue)

    def enqueue(self, ev: HistoryEvent, size: int) -> None:
        self.record.queue.append(ev)
        self.queue_bytes += size
        self.dirty = True

    def set_queue(self, queue: list[HistoryEvent]) -> None:
        self.record.queue = queue
        self.queue_bytes = sum(event_size(e) for e in queue)
        self.dirty = True


class EntityProcessor:
    """Runs entity operations and the lock protocol inside the processor's batches.

    Args:
        registry: the app's entity definitions.
        topics: the task hub's topics (``H.entities`` is written here).
        send: produces a message to an instance or entity within the batch.
        rejects: dead-letters the messages an entity cannot apply (see the module
            docstring, "Poison").
        max_payload_bytes: limit of states, results and signal inputs.
        limits: the record size limit of each topic.

    Attributes:
        too_large: operations failed, answered or dead-lettered because the
            entity's record would not fit.
    """

    def __init__(
        self,
        registry: Registry,
        topics: HubTopics,
        send: Send,
        rejects: Rejects,
        *,
        max_payload_bytes: int,
        limits: RecordLimits,
    ) -> None:
        self.registry = registry
        self.topics = topics
        self._send = send
        self._rejects = rejects
        self.max_payload_bytes = max_payload_bytes
        self._limits = limits
        self.too_large = 0

    # -- events addressed to an entity -----------------------------------------------------

    def process(self, batch: PartitionBatch, entity_id: str, events: list[HistoryEvent]) -> None:
        """Apply one batch's events for ``entity_id``, in order, and store the result.

        A message that cannot be applied is dead-lettered and its caller answered
        with an error; the others apply (module docstring, "Poison").

        Raises:
            UpgradeRequiredError: the entity's stored record is a newer release's.
        """
        try:
            entity = EntityId.parse(entity_id)
        except ValueError as exc:
            for ev in events:
                self._refuse(batch, entity_id, ev, InvalidMessageError(str(exc)))
            return
        key = entity_key(entity_id)
        tx = batch.tx
        raw = tx.get(key)
        try:
            record = (
                decode_entity(raw) if raw is not None else EntityRecord(entity.name, entity.key)
            )
        except Exception as exc:
            assert raw is not None
            self._quarantined(batch, entity_id, key, raw, events, exc)
            return
        sent_before = len(batch.out)
        room = min(
            self._limits.room(self.topics.changelog, key),
            self._limits.room(self.topics.entities, entity_id.encode()),
        )
        run = _Run(batch, entity, record, room)
        try:
            for ev in events:
                self._guarded(run, ev)
            if run.dirty:
                self._store(run, batch.number, tx, key, existed=raw is not None)
        except Exception as exc:
            # Storing failed (a bug): nothing of this entity's batch may leave without
            # its state, so its responses and signals go too, and every message is refused.
            log.exception("entity %s: storing its batch failed", entity_id)
            batch.truncate(sent_before)
            for ev in events:
                self._refuse(batch, entity_id, ev, exc)

    def _guarded(self, run: _Run, ev: HistoryEvent) -> None:
        """Handle ``ev``; if that raises, undo it alone and refuse it."""
        rec = run.record
        queue = rec.queue
        batch = run.batch
        # What handling a message can change: the fields, the queue (appended to, or
        # replaced by a new list), and the batch's output and metrics (appended to).
        before = (
            rec.state,
            rec.last_modified_at,
            rec.locked_by,
            queue,
            len(queue),
            run.queue_bytes,
            rec.error_count,
            rec.last_error,
            run.dirty,
            len(batch.out),
            len(batch.tally),
        )
        try:
            self._handle(run, ev)
        except Exception as exc:
            (
                rec.state,
                rec.last_modified_at,
                rec.locked_by,
                rec.queue,
                queued,
                run.queue_bytes,
                rec.error_count,
                rec.last_error,
                run.dirty,
                sent,
                tallied,
            ) = before
            del queue[queued:]
            batch.truncate(sent)
            del batch.tally[tallied:]
            if not isinstance(exc, InvalidMessageError):
                log.exception("entity %s: processing %s raised", run.entity_id, ev.kind.value)
            self._refuse(run.batch, run.entity_id, ev, exc)

    def _refuse(
        self, batch: PartitionBatch, entity_id: str, ev: HistoryEvent, exc: BaseException
    ) -> None:
        """Dead-letter ``ev`` with the reason; a caller waiting for it gets the error."""
        if isinstance(exc, InvalidMessageError):
            detail = str(exc)
            failure = FailureDetails.from_exception(exc)
        else:
            detail = f"durafka internal error: {type(exc).__name__}: {exc}"
            original = FailureDetails.from_exception(exc)
            failure = FailureDetails(original.error_type, detail, original.stack_trace)
        reason = f"entity {entity_id} cannot apply {ev.kind.value}: {detail}"
        cause = type(exc).__name__ if isinstance(exc, InvalidMessageError) else "InternalError"
        self._rejects.event(batch, entity_id, ev, reason, cause=cause)
        if ev.instance_id is None:
            return
        if ev.kind is EventKind.ENTITY_OPERATION and ev.seq >= 0:
            answer = EventKind.ENTITY_RESPONSE
        elif ev.kind is EventKind.LOCK_REQUESTED:
            answer = EventKind.LOCK_GRANTED
        else:
            return  # nobody waits for a signal or a release
        failure = FailureDetails(failure.error_type, reason, failure.stack_trace)
        self._answer(batch, entity_id, ev, answer, failure=failure)

    def _answer(
        self,
        batch: PartitionBatch,
        entity_id: str,
        ev: HistoryEvent,
        kind: EventKind,
        *,
        payload: bytes | None = None,
        failure: FailureDetails | None = None,
    ) -> None:
        """Answer the caller of ``ev``: a call's response, a lock request's grant."""
        assert ev.instance_id is not None
        self._send(
            batch,
            ev.instance_id,
            HistoryEvent(
                kind,
                batch.now_ms,
                seq=ev.seq,
                payload=payload,
                failure=failure,
                instance_id=entity_id,
                execution_id=ev.execution_id,
            ),
            entity_id,
        )

    def _quarantined(
        self,
        batch: PartitionBatch,
        entity_id: str,
        key: bytes,
        raw: bytes,
        events: list[HistoryEvent],
        exc: Exception,
    ) -> None:
        """The stored record of ``entity_id`` does not decode: refuse its messages.

        A delete in the batch removes the record (its bytes go to the dead letters)
        and applies; the batch's other messages are refused. A record of a newer
        release stops the partition instead.
        """
        if isinstance(exc, UnknownSchemaError) and written_by_newer_release(
            raw, exc.schema, entity_id
        ):
            raise UpgradeRequiredError(
                f"partition {batch.number} stopped: the stored record of entity {entity_id} "
                f"was written by a newer durafka release ({exc}); upgrade this processor "
                "(nothing is lost: the partition goes on once an upgraded processor takes it)",
                partition=batch.number,
            ) from exc
        quarantine = InvalidMessageError(
            f"entity {entity_id} is quarantined: its stored record could not be decoded "
            f"({exc}); delete the entity to start it afresh"
        )
        log.error("%s", quarantine)
        deleted = False
        for ev in events:
            if (
                not deleted
                and ev.kind is EventKind.ENTITY_OPERATION
                and ev.name == DELETE_OPERATION
            ):
                deleted = True
                if ev.instance_id is not None and ev.seq >= 0:
                    self._answer(batch, entity_id, ev, EventKind.ENTITY_RESPONSE)
            else:
                self._refuse(batch, entity_id, ev, quarantine)
        if deleted:
            batch.tx.delete(key)
            batch.emit(
                OutgoingRecord(self.topics.entities, batch.number, entity_id.encode(), None),
                entity_id,
            )
            self._rejects.stored(
                batch, key, raw, f"deleted: {quarantine}", cause="EntityQuarantined"
            )

    def _handle(self, run: _Run, ev: HistoryEvent) -> None:
        kind = ev.kind
        rec = run.record
        if kind is EventKind.ENTITY_OPERATION:
            if rec.locked_by is not None and ev.instance_id != rec.locked_by:
                self._queue(run, ev)
            else:
                self._execute(run, ev)
        elif kind is EventKind.LOCK_REQUESTED:
            if rec.locked_by is not None and ev.instance_id != rec.locked_by:
                self._queue(run, ev)
            else:
                self._lock(run, ev)
        elif kind is EventKind.LOCK_RELEASED:
            self._release(run, ev)
        else:
            raise InvalidMessageError(
                f"entities do not take {kind.value} messages (only operations and lock messages)"
            )

    def _execute(self, run: _Run, ev: HistoryEvent) -> None:
        rec = run.record
        entity = run.entity
        operation = ev.name or ""
        definition = self.registry.entities.get(entity.name)
        if definition is not None:
            outcome = run_operation(
                definition,
                entity,
                operation,
                ev.payload,
                rec.state,
                max_payload_bytes=self.max_payload_bytes,
            )
        elif operation == DELETE_OPERATION:  # deleting needs no code: any processor can
            outcome = OperationOutcome(None)
        elif ev.instance_id is None or ev.seq < 0:  # a signal: nobody to tell but the dead letters
            known = sorted(self.registry.entities) or "none"
            raise InvalidMessageError(
                f"no entity named {entity.name!r} is registered (known: {known})"
            )
        else:
            known = sorted(self.registry.entities) or "none"
            outcome = OperationOutcome(
                rec.state,
                failure=FailureDetails(
                    "durafka.errors.UnknownFunctionError",
                    f"no entity named {entity.name!r} is registered (known: {known})",
                ),
            )
        batch = run.batch
        metrics.entity_operation(batch, entity.name, outcome.failure is not None)
        if outcome.failure is None:
            too_large = self._outcome_too_large(run, ev, outcome)
            if too_large is not None:
                self.too_large += 1
                outcome = OperationOutcome(
                    rec.state,
                    failure=FailureDetails("durafka.errors.RecordTooLargeError", too_large),
                )
        if outcome.failure is None:
            if outcome.state != rec.state:
                rec.state = outcome.state
                rec.last_modified_at = batch.now_ms
                run.dirty = True
            for target, op, payload in outcome.signals:
                self._send(
                    batch,
                    str(target),
                    HistoryEvent(
                        EventKind.ENTITY_OPERATION, batch.now_ms, name=op, payload=payload
                    ),
                    run.entity_id,
                )
        else:
            rec.error_count += 1
            rec.last_error = outcome.failure
            run.dirty = True
            if ev.instance_id is None or ev.seq < 0:
                log.warning(
                    "signal %r to entity %s failed (state rolled back): %s: %s",
                    operation,
                    run.entity_id,
                    outcome.failure.error_type,
                    outcome.failure.message,
                )
        if ev.instance_id is not None and ev.seq >= 0:
            self._answer(
                batch,
                run.entity_id,
                ev,
                EventKind.ENTITY_RESPONSE,
                payload=outcome.result,
                failure=outcome.failure,
            )

    # -- the record's size --------------------------------------------------------------------

    def _outcome_too_large(
        self, run: _Run, ev: HistoryEvent, outcome: OperationOutcome
    ) -> str | None:
        """Why an operation's new state or result cannot be written (None: it can)."""
        operation = ev.name or ""
        if outcome.state != run.record.state:
            excess = self._too_large(run, outcome.state)
            if excess is not None:
                return (
                    f"operation {operation!r} would make entity {run.entity_id} too large: "
                    f"its record would be {excess:,} bytes with the new state of "
                    f"{len(outcome.state or b''):,} bytes, more than the "
                    f"{run.room - RESERVE:,} bytes an entity may take (the record size "
                    "limit, less room for its last error); the operation was rolled back"
                )
        if ev.instance_id is not None and ev.seq >= 0 and outcome.result is not None:
            size = len(outcome.result) + len(ev.instance_id.encode()) + _SLACK
            limit = self._limits.room(self.topics.orchestrations, ev.instance_id.encode())
            if size > limit:
                return (
                    f"the result of operation {operation!r} of entity {run.entity_id} is "
                    f"{len(outcome.result):,} bytes, more than its response to "
                    f"{ev.instance_id!r} may hold ({limit:,} bytes); the operation was rolled back"
                )
        return None

    def _too_large(self, run: _Run, state: bytes | None, queued: int = 0) -> int | None:
        """The record's size with ``state`` and ``queued`` more queue bytes when that is
        over what an entity may take (its room less :data:`RESERVE`), else None.

        A cheap bound first (the record is encoded only when the bound is over).
        """
        rec = run.record
        limit = run.room - RESERVE
        failure = rec.last_error
        bound = (
            len(state or b"")
            + run.queue_bytes
            + queued
            + len(rec.name.encode())
            + len(rec.key.encode())
            + len((rec.locked_by or "").encode())
            + (0 if failure is None else _failure_size(failure))
            + _SLACK
        )
        if bound <= limit:
            return None
        size = len(encode_entity(replace(rec, state=state))) + queued + 10
        return size if size > limit else None

    def _queue(self, run: _Run, ev: HistoryEvent) -> None:
        """Queue ``ev`` behind the lock, or refuse it when the record would not fit."""
        size = event_size(ev)
        excess = self._too_large(run, run.record.state, size)
        if excess is None:
            run.enqueue(ev, size)
            return
        self.too_large += 1
        what = "lock request" if ev.kind is EventKind.LOCK_REQUESTED else f"operation {ev.name!r}"
        reason = (
            f"entity {run.entity_id} is locked by {run.record.locked_by!r} and its queue is "
            f"full: queuing the {what} ({size:,} bytes) would make its record {excess:,} "
            f"bytes, more than the {run.room - RESERVE:,} bytes an entity may take"
        )
        if ev.kind is EventKind.ENTITY_OPERATION and ev.instance_id is not None and ev.seq >= 0:
            failure = FailureDetails("durafka.errors.RecordTooLargeError", reason)
            self._answer(run.batch, run.entity_id, ev, EventKind.ENTITY_RESPONSE, failure=failure)
            return
        # Never ran: kept whole, so it can be produced again once the queue drained.
        self._rejects.event(run.batch, run.entity_id, ev, reason, cause="RecordTooLargeError")

    def _lock(self, run: _Run, ev: HistoryEvent) -> None:
        ids = _ids(ev.payload)
        owner = ev.instance_id
        if owner is None or run.entity_id not in ids:
            raise InvalidMessageError(
                f"malformed lock request (owner {owner!r}, entities {ids!r}): it needs an "
                f"owner and must name entity {run.entity_id}"
            )
        run.record.locked_by = owner
        run.dirty = True
        now = run.batch.now_ms
        position = ids.index(run.entity_id)
        if position + 1 < len(ids):
            forward = HistoryEvent(
                EventKind.LOCK_REQUESTED,
                now,
                seq=ev.seq,
                payload=ev.payload,
                instance_id=owner,
                execution_id=ev.execution_id,
            )
            self._send(run.batch, ids[position + 1], forward, run.entity_id)
        else:
            self._answer(run.batch, run.entity_id, ev, EventKind.LOCK_GRANTED)

    def _release(self, run: _Run, ev: HistoryEvent) -> None:
        rec = run.record
        owner = ev.instance_id
        ids = _ids(ev.payload)
        if owner is None:
            raise InvalidMessageError("malformed lock release: it names no owner")
        if rec.locked_by == owner:
            rec.locked_by = None
            run.dirty = True
            # A release with ids follows the request's path: pass it on.
            if run.entity_id in ids:
                position = ids.index(run.entity_id)
                if position + 1 < len(ids):
                    self._send(run.batch, ids[position + 1], ev, run.entity_id)
            self._drain(run)
            return
        # The request still waits here, so it never reached the entities after this one.
        kept = [
            q
            for q in rec.queue
            if not (q.kind is EventKind.LOCK_REQUESTED and q.instance_id == owner)
        ]
        if len(kept) != len(rec.queue):
            run.set_queue(kept)

    def _drain(self, run: _Run) -> None:
        """Run what waited for the lock, in order, until a lock request locks it again."""
        rec = run.record
        waiting = rec.queue
        run.set_queue([])
        for item in waiting:
            if rec.locked_by is not None and item.instance_id != rec.locked_by:
                run.enqueue(item, event_size(item))
            else:
                self._guarded(run, item)

    def _store(
        self, run: _Run, partition: int, tx: StoreTransaction, key: bytes, *, existed: bool
    ) -> None:
        rec = run.record
        out_key = run.entity_id.encode()
        if rec.state is None and rec.locked_by is None and not rec.queue:
            # Nothing left to keep: the entity does not exist (deleted, or never created).
            if existed:
                tx.delete(key)
                run.batch.emit(
                    OutgoingRecord(self.topics.entities, partition, out_key, None), run.entity_id
                )
            return
        value = encode_entity(rec)
        if len(value) > run.room and rec.last_error is not None:
            # The reserve holds a last error cut short, not any: cut it.
            rec.last_error = _cut(rec.last_error)
            value = encode_entity(rec)
        tx.put(key, value)
        run.batch.emit(
            OutgoingRecord(self.topics.entities, partition, out_key, value), run.entity_id
        )

    # -- actions of orchestrations ------------------------------------------------------------

    def route_action(
        self,
        batch: PartitionBatch,
        orchestration_id: str,
        execution_id: str | None,
        a: HistoryEvent,
    ) -> None:
        """Turn an entity action of an orchestration into messages to entities.

        Calls and lock requests carry the caller's ``execution_id``, echoed in the
        response or grant, so a restarted orchestration ignores answers meant for
        its earlier execution.
        """
        kind = a.kind
        now = batch.now_ms
        if kind is EventKind.ENTITY_CALLED or kind is EventKind.ENTITY_SIGNALED:
            if a.instance_id is None:
                return
            operation = HistoryEvent(
                EventKind.ENTITY_OPERATION,
                now,
                seq=a.seq if kind is EventKind.ENTITY_CALLED else -1,
                name=a.name,
                payload=a.payload,
                instance_id=orchestration_id,
                execution_id=execution_id,
            )
            self._send(batch, a.instance_id, operation, orchestration_id)
        elif kind is EventKind.LOCK_REQUESTED:
            ids = _ids(a.payload)
            if ids:
                request = HistoryEvent(
                    EventKind.LOCK_REQUESTED,
                    now,
                    seq=a.seq,
                    payload=a.payload,
                    instance_id=orchestration_id,
                    execution_id=execution_id,
                )
                self._send(batch, ids[0], request, orchestration_id)
        elif kind is EventKind.LOCK_RELEASED:
            for target in _ids(a.payload):
                release = HistoryEvent(
                    EventKind.LOCK_RELEASED, now, seq=a.seq, instance_id=orchestration_id
                )
                self._send(batch, target, release, orchestration_id)

    def release_locks(
        self, batch: PartitionBatch, orchestration_id: str, history: list[HistoryEvent]
    ) -> None:
        """Release the lock an ended orchestration still holds or waits for, if any."""
        held = open_lock(history)
        if held is None:
            return
        ids, granted = held
        now = batch.now_ms
        if granted:
            for target in ids:
                release = HistoryEvent(EventKind.LOCK_RELEASED, now, instance_id=orchestration_id)
                self._send(batch, target, release, orchestration_id)
        else:
            chained = HistoryEvent(
                EventKind.LOCK_RELEASED,
                now,
                payload=json.dumps(ids).encode(),
                instance_id=orchestration_id,
            )
            self._send(batch, ids[0], chained, orchestration_id)
        log.info(
            "released the lock of ended orchestration %r on %s%s",
            orchestration_id,
            ", ".join(ids),
            "" if granted else " (not granted yet)",
        )


def _failure_size(failure: FailureDetails) -> int:
    return (
        len(failure.error_type.encode())
        + len(failure.message.encode())
        + len((failure.stack_trace or "").encode())
        + 16
    )


def _cut(failure: FailureDetails) -> FailureDetails:
    """A last error short enough for :data:`RESERVE` (no stack trace, 1,000-character texts)."""
    return FailureDetails(failure.error_type[:1000], failure.message[:1000], None)
