"""Typed records <-> Avro bytes, one pair of functions per record type.

Conversions are written out by hand (no reflection) because they run for
every record on the processor's and worker's hot paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durafka.codec import fast
from durafka.codec.avro import bound
from durafka.errors import FailureDetails
from durafka.runtime.history import EventKind, HistoryEvent, IdReusePolicy
from durafka.status import OrchestrationStatus, RuntimeStatus

_enc_message, _dec_message = bound("OrchestrationMessage")
_enc_task, _dec_task = bound("ActivityTask")
_enc_status, _dec_status = bound("InstanceStatus")
_enc_state, _dec_state = bound("InstanceState")
_enc_chunk, _dec_chunk = bound("HistoryChunk")
_enc_dead, _dec_dead = bound("DeadLetter")
_enc_entity, _dec_entity = bound("EntityState")

_KINDS = {k.value: k for k in EventKind}
_POLICIES = {p.value: p for p in IdReusePolicy}
_STATUSES = {s.value: s for s in RuntimeStatus}


def _failure_to_dict(f: FailureDetails | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"error_type": f.error_type, "message": f.message, "stack_trace": f.stack_trace}


def _failure_from_dict(d: dict[str, Any] | None) -> FailureDetails | None:
    if d is None:
        return None
    return FailureDetails(d["error_type"], d["message"], d["stack_trace"])


def event_to_dict(e: HistoryEvent) -> dict[str, Any]:
    """A history event as the Avro record dict."""
    return {
        "kind": e.kind.value,
        "timestamp": e.timestamp,
        "seq": e.seq,
        "name": e.name,
        "payload": e.payload,
        "failure": _failure_to_dict(e.failure),
        "instance_id": e.instance_id,
        "fire_at": e.fire_at,
        "attempt": e.attempt,
        "execution_id": e.execution_id,
        "parent_execution_id": e.parent_execution_id,
        "id_reuse_policy": e.id_reuse_policy.value,
        "version": e.version,
        "heartbeat_timeout_ms": e.heartbeat_timeout_ms,
    }


def event_from_dict(d: dict[str, Any]) -> HistoryEvent:
    """The history event of an Avro record dict."""
    f = d["failure"]
    return HistoryEvent(
        _KINDS[d["kind"]],
        d["timestamp"],
        d["seq"],
        d["name"],
        d["payload"],
        None if f is None else FailureDetails(f["error_type"], f["message"], f["stack_trace"]),
        d["instance_id"],
        d["fire_at"],
        d["attempt"],
        d.get("execution_id"),
        d.get("parent_execution_id"),
        _POLICIES.get(d.get("id_reuse_policy", ""), IdReusePolicy.REJECT_DUPLICATE),
        d.get("version"),
        d.get("heartbeat_timeout_ms"),
    )


# -- H.orchestrations -----------------------------------------------------------


def encode_message(instance_id: str, event: HistoryEvent) -> bytes:
    """A record value for ``H.orchestrations``: an event addressed to one instance."""
    return fast.encode_message(instance_id, event)


def decode_message(data: bytes) -> tuple[str, HistoryEvent]:
    """``(instance_id, event)`` of an ``H.orchestrations`` record value."""
    if fast.is_current(data, fast.MESSAGE_HEADER):
        return fast.decode_message(data)
    d = _dec_message(data)  # an older schema version: resolved by fastavro
    return d["instance_id"], event_from_dict(d["event"])


# -- H.activities ------------------------------------------------------------------


@dataclass(slots=True)
class ActivityTask:
    """One attempt of an activity, on ``H.activities``.

    Attributes:
        instance_id: the orchestration that scheduled it.
        seq: the sequence id of the ``call_activity``.
        attempt: the retry policy's attempt number (1-based).
        name: the activity's registered name.
        input: its JSON input.
        scheduled_at: when it was scheduled, ms since the Unix epoch.
        execution_id: the execution token waiting for its result.
        deadline: when the attempt times out (ms since the epoch; None: no timeout).
        heartbeat_timeout_ms: the longest time between two heartbeats (None: none).
    """

    instance_id: str
    seq: int
    attempt: int
    name: str
    input: bytes | None
    scheduled_at: int
    execution_id: str | None = None
    deadline: int | None = None
    heartbeat_timeout_ms: int | None = None


def encode_activity_task(t: ActivityTask) -> bytes:
    """A record value for ``H.activities``."""
    return fast.encode_activity_task(
        t.instance_id,
        t.seq,
        t.attempt,
        t.name,
        t.input,
        t.scheduled_at,
        t.execution_id,
        t.deadline,
        t.heartbeat_timeout_ms,
    )


def decode_activity_task(data: bytes) -> ActivityTask:
    """The activity task of an ``H.activities`` record value."""
    if fast.is_current(data, fast.TASK_HEADER):
        return ActivityTask(*fast.decode_activity_task(data))
    d = _dec_task(data)
    return ActivityTask(
        d["instance_id"],
        d["seq"],
        d["attempt"],
        d["name"],
        d["input"],
        d["scheduled_at"],
        d.get("execution_id"),
        d.get("deadline"),
        d.get("heartbeat_timeout_ms"),
    )


# -- H.status --------------------------------------------------------------------------


def status_to_dict(s: OrchestrationStatus) -> dict[str, Any]:
    """A status as the Avro record dict."""
    return {
        "instance_id": s.instance_id,
        "name": s.name,
        "runtime_status": s.runtime_status.value,
        "input": s.serialized_input,
        "output": s.serialized_output,
        "failure": _failure_to_dict(s.failure_details),
        "custom_status": s.serialized_custom_status,
        "created_at": s.created_at_ms,
        "last_updated_at": s.last_updated_at_ms,
        "parent_instance_id": s.parent_instance_id,
        "execution_id": s.execution_id,
    }


def status_from_dict(d: dict[str, Any]) -> OrchestrationStatus:
    """The status of an Avro record dict."""
    return OrchestrationStatus(
        d["instance_id"],
        d["name"],
        _STATUSES.get(d["runtime_status"], RuntimeStatus.PENDING),
        d["input"],
        d["output"],
        _failure_from_dict(d["failure"]),
        d["custom_status"],
        d["created_at"],
        d["last_updated_at"],
        d["parent_instance_id"],
        d.get("execution_id"),
    )


def encode_status(s: OrchestrationStatus) -> bytes:
    """A record value for ``H.status``."""
    return fast.encode_status(s)


def decode_status(data: bytes) -> OrchestrationStatus:
    """The status of an ``H.status`` record value."""
    if fast.is_current(data, fast.STATUS_HEADER):
        return fast.decode_status(data)
    return status_from_dict(_dec_status(data))


# -- store: instance header and history chunks -----------------------------------------


@dataclass(slots=True)
class InstanceState:
    """An instance's header in the processor's store (key ``i/<id>``).

    Attributes:
        status: the instance's current status (what ``H.status`` shows).
        parent_seq: the sequence id of the parent's call, for a sub-orchestration.
        history_chunks: number of history chunks ``h/<id>/<n>`` stored.
        history_length: number of history events in all chunks.
        generation: incremented by ``continue_as_new``.
        pending_events: events held back while the instance is suspended.
        parent_execution_id: a sub-orchestration's parent execution (echoed with
            its result, so a parent restarted under the same id ignores it).
        rewinds: rewinds of the current generation; not stored, counted from the
            history's ``EXECUTION_REWOUND`` events when the instance is loaded.
    """

    status: OrchestrationStatus
    parent_seq: int = -1
    history_chunks: int = 0
    history_length: int = 0
    generation: int = 0
    pending_events: list[HistoryEvent] = field(default_factory=list)
    parent_execution_id: str | None = None
    rewinds: int = 0

    @property
    def execution_token(self) -> str | None:
        """What completions for the current execution and generation carry.

        ``<execution id>:<generation>``: sequence ids restart with each start of the
        id and each ``continue_as_new`` generation, so a late result of an earlier
        one carries another token and is dropped; ``:r<n>`` follows after the
        n-th rewind, so results of the calls a rewind retries, delivered late by
        the failed attempt, are dropped too. None for instances started before
        execution ids existed (their completions are not checked).
        """
        execution_id = self.status.execution_id
        if execution_id is None:
            return None
        token = f"{execution_id}:{self.generation}"
        return f"{token}:r{self.rewinds}" if self.rewinds else token


def encode_state(s: InstanceState) -> bytes:
    """A store value for ``i/<id>``."""
    return encode_state_and_status(s, with_status=False)[0]


def encode_state_and_status(s: InstanceState, *, with_status: bool) -> tuple[bytes, bytes | None]:
    """The store value for ``i/<id>`` and, when asked, the ``H.status`` value of its status
    (the same bytes as :func:`encode_state` and :func:`encode_status`, the status encoded once).
    """
    return fast.encode_state_and_status(
        s.status,
        s.parent_seq,
        s.history_chunks,
        s.history_length,
        s.generation,
        s.pending_events,
        s.parent_execution_id,
        with_status=with_status,
    )


def decode_state(data: bytes) -> InstanceState:
    """The instance header of a store value."""
    if fast.is_current(data, fast.STATE_HEADER):
        return InstanceState(*fast.decode_state(data))
    d = _dec_state(data)
    return InstanceState(
        status_from_dict(d["status"]),
        d["parent_seq"],
        d["history_chunks"],
        d["history_length"],
        d["generation"],
        [event_from_dict(e) for e in d["pending_events"]],
        d.get("parent_execution_id"),
    )


def encode_chunk(events: list[HistoryEvent]) -> bytes:
    """A store value for ``h/<id>/<n>``."""
    return fast.encode_chunk(events)


def encode_chunks(events: list[HistoryEvent], max_bytes: int) -> list[bytes]:
    """Store values for ``h/<id>/<n>``, ``h/<id>/<n+1>``, ..., each at most ``max_bytes``.

    Raises:
        RecordTooLargeError: one event alone is larger than a chunk may be.
    """
    return fast.encode_chunks(events, max_bytes)


def event_size(e: HistoryEvent) -> int:
    """Bytes ``e`` takes in a history chunk or an entity's queue."""
    return fast.event_size(e)


def decode_chunk(data: bytes) -> list[HistoryEvent]:
    """The history events of a store value."""
    if fast.is_current(data, fast.CHUNK_HEADER):
        return fast.decode_chunk(data)
    return [event_from_dict(e) for e in _dec_chunk(data)["events"]]


# -- H.dead-letters --------------------------------------------------------------------


@dataclass(slots=True)
class DeadLetter:
    """A record on ``H.dead-letters`` (schema ``DeadLetter``): what failed, where, and why.

    Built by :mod:`durafka.deadletters`, which cuts ``value`` (then headers, then
    the key) so the record fits the producer's limit.

    Attributes:
        reason: why the record could not be used.
        source_topic: where the record came from.
        source_partition: its partition.
        source_offset: its offset (-1: found in a store, not read from a topic).
        key: its key (cut if listed in ``truncated``).
        value: its value (cut if listed in ``truncated``).
        failed_at: when it was dead-lettered, ms since the epoch.
        headers: its Kafka headers, in order.
        source_timestamp: its timestamp, ms since the epoch, if known.
        key_size: bytes of the original key (None: no key).
        value_size: bytes of the original value (None: no value).
        value_sha256: SHA-256 of the original value.
        truncated: what was cut to fit: ``reason``, ``value``, ``headers``, ``key``.
        durafka_version: the version that wrote the dead letter.
        written_by: who wrote it: ``processor <id>`` or ``worker <id>``.
    """

    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    failed_at: int
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    source_timestamp: int | None = None
    key_size: int | None = None
    value_size: int | None = None
    value_sha256: bytes | None = None
    truncated: list[str] = field(default_factory=list)
    durafka_version: str = ""
    written_by: str = ""


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """A record value for ``H.dead-letters``."""
    return _enc_dead(
        {
            "reason": letter.reason,
            "source_topic": letter.source_topic,
            "source_partition": letter.source_partition,
            "source_offset": letter.source_offset,
            "key": letter.key,
            "value": letter.value,
            "failed_at": letter.failed_at,
            "headers": [{"key": k, "value": v} for k, v in letter.headers],
            "source_timestamp": letter.source_timestamp,
            "key_size": letter.key_size,
            "value_size": letter.value_size,
            "value_sha256": letter.value_sha256,
            "truncated": letter.truncated,
            "durafka_version": letter.durafka_version,
            "written_by": letter.written_by,
        }
    )


def decode_dead_letter(data: bytes) -> dict[str, Any]:
    """A dead letter as a dict of the ``DeadLetter`` schema's fields (``headers``: dicts)."""
    return _dec_dead(data)


# -- store and H.entities: entities -------------------------------------------------------


@dataclass(slots=True)
class EntityRecord:
    """An entity as the processor stores it (key ``e/<id>``) and publishes it on ``H.entities``.

    Attributes:
        name: the entity's registered name.
        key: its key within the name.
        state: the state as JSON bytes; None when it has none (never set, or deleted).
        last_modified_at: when the state last changed, ms since the epoch.
        locked_by: the orchestration holding its lock (``ctx.lock``), if any.
        queue: operations and lock requests waiting for the lock, in arrival order.
        error_count: operations that raised (and were rolled back).
        last_error: why the latest failed operation failed.
    """

    name: str
    key: str
    state: bytes | None = None
    last_modified_at: int = 0
    locked_by: str | None = None
    queue: list[HistoryEvent] = field(default_factory=list)
    error_count: int = 0
    last_error: FailureDetails | None = None


def encode_entity(r: EntityRecord) -> bytes:
    """A store value for ``e/<id>``, and a record value for ``H.entities``."""
    return _enc_entity(
        {
            "name": r.name,
            "key": r.key,
            "state": r.state,
            "last_modified_at": r.last_modified_at,
            "locked_by": r.locked_by,
            "queue": [event_to_dict(e) for e in r.queue],
            "error_count": r.error_count,
            "last_error": _failure_to_dict(r.last_error),
        }
    )


def decode_entity(data: bytes) -> EntityRecord:
    """The entity of a store value or ``H.entities`` record value."""
    d = _dec_entity(data)
    return EntityRecord(
        d["name"],
        d["key"],
        d["state"],
        d["last_modified_at"],
        d["locked_by"],
        [event_from_dict(e) for e in d["queue"]],
        d["error_count"],
        _failure_from_dict(d["last_error"]),
    )
