"""Hand-written Avro binary encoders and decoders for the hot-path records.

fastavro's generic writer costs several microseconds per record (dict building,
union branch matching); these encoders write the same bytes directly, several
times faster. The decoders read the *current* schema's bytes straight into the
typed records (2x faster than fastavro's reader plus the dict conversion); a
record written with an older schema version takes fastavro's resolving reader
instead (``durafka.codec.records``). Both follow the field order of
``schemas/*.avsc`` exactly; ``tests/codec/test_fast_encoders.py`` checks byte
equality and round trips against fastavro on generated records, so a schema
change that forgets them fails there.

Avro binary, briefly: ``int``/``long`` are zig-zag varints; ``string``/``bytes``
are a length then the bytes; a union is the branch index then the value; an
enum is its symbol index; an array is ``count, items..., 0``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TypeVar

from durafka.codec.avro import MARKER, codec, schema_dir
from durafka.errors import DecodeError, FailureDetails, RecordTooLargeError
from durafka.runtime.history import EventKind, HistoryEvent, IdReusePolicy
from durafka.status import OrchestrationStatus, RuntimeStatus


def _symbols(schema_file: str, field: str) -> list[str]:
    fields = json.loads((schema_dir() / schema_file).read_text())["fields"]
    (spec,) = [f for f in fields if f["name"] == field]
    return list(spec["type"]["symbols"])


_KIND_INDEX = {
    EventKind(s): i
    for i, s in enumerate(_symbols("HistoryEvent.avsc", "kind"))
    if s in EventKind.__members__
}
_STATUS_INDEX = {
    RuntimeStatus(s): i
    for i, s in enumerate(_symbols("InstanceStatus.avsc", "runtime_status"))
    if s in RuntimeStatus.__members__
}


T = TypeVar("T")

_KINDS = [
    EventKind(s) if s in EventKind.__members__ else None
    for s in _symbols("HistoryEvent.avsc", "kind")
]
_STATUSES = [
    RuntimeStatus(s) if s in RuntimeStatus.__members__ else None
    for s in _symbols("InstanceStatus.avsc", "runtime_status")
]
_POLICIES = [IdReusePolicy(s) for s in _symbols("HistoryEvent.avsc", "id_reuse_policy")]
_POLICY_INDEX = {p: i for i, p in enumerate(_POLICIES)}


if len(_KIND_INDEX) >= 64 or len(_STATUS_INDEX) >= 64:  # written as one varint byte below
    raise ImportError("durafka.codec.fast writes enum indexes as one byte: fewer than 64 symbols")


def _header(short_name: str) -> bytes:
    return MARKER + codec(short_name).fingerprint.to_bytes(8, "little")


MESSAGE_HEADER = _header("OrchestrationMessage")
CHUNK_HEADER = _header("HistoryChunk")
STATUS_HEADER = _header("InstanceStatus")
STATE_HEADER = _header("InstanceState")
TASK_HEADER = _header("ActivityTask")


def write_long(n: int, out: bytearray) -> None:
    """Append a zig-zag varint (Avro ``int`` and ``long``)."""
    if 0 <= n < 64:  # most values: sequence ids, counts, enum indexes, lengths
        out.append(n << 1)
        return
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


# Timestamps repeat (every record of a batch carries its time): their varints are
# kept, bounded (cleared when full), since a timestamp is the longest varint written.
_TIME_VARINTS: dict[int, bytes] = {}


def _write_time(ms: int, out: bytearray) -> None:
    encoded = _TIME_VARINTS.get(ms)
    if encoded is None:
        buf = bytearray()
        write_long(ms, buf)
        encoded = bytes(buf)
        if len(_TIME_VARINTS) >= 4096:
            _TIME_VARINTS.clear()
        _TIME_VARINTS[ms] = encoded
    out += encoded


def write_bytes(b: bytes, out: bytearray) -> None:
    """Append Avro ``bytes`` (also ``string`` once UTF-8 encoded)."""
    write_long(len(b), out)
    out += b


def _opt_str(s: str | None, out: bytearray) -> None:
    if s is None:
        out.append(0)
    else:
        out.append(2)  # branch 1, zig-zag encoded
        write_bytes(s.encode(), out)


def _opt_bytes(b: bytes | None, out: bytearray) -> None:
    if b is None:
        out.append(0)
    else:
        out.append(2)
        write_bytes(b, out)


def _opt_long(n: int | None, out: bytearray) -> None:
    if n is None:
        out.append(0)
    else:
        out.append(2)
        write_long(n, out)


def _opt_failure(f: FailureDetails | None, out: bytearray) -> None:
    if f is None:
        out.append(0)
        return
    out.append(2)
    write_bytes(f.error_type.encode(), out)
    write_bytes(f.message.encode(), out)
    _opt_str(f.stack_trace, out)


def write_event(e: HistoryEvent, out: bytearray) -> None:
    """Append the Avro body of a ``HistoryEvent``."""
    # The hottest encoder (every history event, every message): most optional fields
    # are None, so their branch byte is appended here rather than through a call.
    append = out.append
    append(_KIND_INDEX[e.kind] << 1)  # fewer than 64 kinds: one byte
    _write_time(e.timestamp, out)
    write_long(e.seq, out)
    if e.name is None:
        append(0)
    else:
        _opt_str(e.name, out)
    if e.payload is None:
        append(0)
    else:
        _opt_bytes(e.payload, out)
    if e.failure is None:
        append(0)
    else:
        _opt_failure(e.failure, out)
    if e.instance_id is None:
        append(0)
    else:
        _opt_str(e.instance_id, out)
    if e.fire_at is None:
        append(0)
    else:
        _opt_long(e.fire_at, out)
    write_long(e.attempt, out)
    if e.execution_id is None:
        append(0)
    else:
        _opt_str(e.execution_id, out)
    if e.parent_execution_id is None:
        append(0)
    else:
        _opt_str(e.parent_execution_id, out)
    append(_POLICY_INDEX[e.id_reuse_policy] << 1)
    if e.version is None:
        append(0)
    else:
        _opt_str(e.version, out)
    if e.heartbeat_timeout_ms is None:
        append(0)
    else:
        _opt_long(e.heartbeat_timeout_ms, out)


def _write_events(events: Iterable[HistoryEvent], count: int, out: bytearray) -> None:
    if count:
        write_long(count, out)
        for e in events:
            write_event(e, out)
    out.append(0)


def encode_message(instance_id: str, event: HistoryEvent) -> bytes:
    """A ``OrchestrationMessage`` value (single-object encoded)."""
    out = bytearray(MESSAGE_HEADER)
    write_bytes(instance_id.encode(), out)
    write_event(event, out)
    return bytes(out)


def encode_chunk(events: list[HistoryEvent]) -> bytes:
    """A ``HistoryChunk`` value (single-object encoded)."""
    out = bytearray(CHUNK_HEADER)
    _write_events(events, len(events), out)
    return bytes(out)


def encode_chunks(events: list[HistoryEvent], max_bytes: int) -> list[bytes]:
    """``HistoryChunk`` values of at most ``max_bytes`` each, holding ``events`` in order.

    One chunk (the bytes of :func:`encode_chunk`) when they fit in one.

    Raises:
        RecordTooLargeError: one event alone does not fit in a chunk of ``max_bytes``.
    """
    whole = encode_chunk(events)
    if len(whole) <= max_bytes:
        return [whole]
    # Room for the header, the item count (a varint of up to 10 bytes) and the final 0.
    overhead = len(CHUNK_HEADER) + 11
    chunks: list[bytes] = []
    body = bytearray()
    count = 0
    for e in events:
        one = bytearray()
        write_event(e, one)
        if len(one) + overhead > max_bytes:
            what = e.kind.value if e.name is None else f"{e.kind.value} {e.name!r}"
            raise RecordTooLargeError(
                f"its {what} event (sequence #{e.seq}) alone is {len(one):,} bytes, more than "
                f"the {max_bytes - overhead:,} bytes a history record may hold"
            )
        if count and len(body) + len(one) + overhead > max_bytes:
            chunks.append(_chunk(body, count))
            body = bytearray()
            count = 0
        body += one
        count += 1
    if count:
        chunks.append(_chunk(body, count))
    return chunks


def _chunk(body: bytes | bytearray, count: int) -> bytes:
    out = bytearray(CHUNK_HEADER)
    write_long(count, out)
    out += body
    out.append(0)
    return bytes(out)


def event_size(e: HistoryEvent) -> int:
    """Bytes of the Avro body of ``e`` (as an item of a history chunk or an entity's queue)."""
    out = bytearray()
    write_event(e, out)
    return len(out)


def write_status(s: OrchestrationStatus, out: bytearray) -> None:
    """Append the Avro body of an ``InstanceStatus``."""
    write_bytes(s.instance_id.encode(), out)
    write_bytes(s.name.encode(), out)
    out.append(_STATUS_INDEX[s.runtime_status] << 1)
    _opt_bytes(s.serialized_input, out)
    _opt_bytes(s.serialized_output, out)
    _opt_failure(s.failure_details, out)
    _opt_bytes(s.serialized_custom_status, out)
    _write_time(s.created_at_ms, out)
    _write_time(s.last_updated_at_ms, out)
    _opt_str(s.parent_instance_id, out)
    _opt_str(s.execution_id, out)


def encode_status(s: OrchestrationStatus) -> bytes:
    """An ``InstanceStatus`` value (single-object encoded)."""
    out = bytearray(STATUS_HEADER)
    write_status(s, out)
    return bytes(out)


def encode_state_and_status(
    status: OrchestrationStatus,
    parent_seq: int,
    history_chunks: int,
    history_length: int,
    generation: int,
    pending_events: list[HistoryEvent],
    parent_execution_id: str | None,
    *,
    with_status: bool,
) -> tuple[bytes, bytes | None]:
    """An ``InstanceState`` value and, when asked, the ``InstanceStatus`` value of its status.

    The header begins with the status's body: encoded once for both records.
    """
    body = bytearray()
    write_status(status, body)
    out = bytearray(STATE_HEADER)
    out += body
    write_long(parent_seq, out)
    write_long(history_chunks, out)
    write_long(history_length, out)
    write_long(generation, out)
    _write_events(pending_events, len(pending_events), out)
    _opt_str(parent_execution_id, out)
    return bytes(out), STATUS_HEADER + body if with_status else None


def encode_activity_task(
    instance_id: str,
    seq: int,
    attempt: int,
    name: str,
    input: bytes | None,
    scheduled_at: int,
    execution_id: str | None,
    deadline: int | None,
    heartbeat_timeout_ms: int | None,
) -> bytes:
    """An ``ActivityTask`` value (single-object encoded)."""
    out = bytearray(TASK_HEADER)
    write_bytes(instance_id.encode(), out)
    write_long(seq, out)
    write_long(attempt, out)
    write_bytes(name.encode(), out)
    _opt_bytes(input, out)
    write_long(scheduled_at, out)
    _opt_str(execution_id, out)
    _opt_long(deadline, out)
    _opt_long(heartbeat_timeout_ms, out)
    return bytes(out)


# -- decoding ------------------------------------------------------------------------
#
# Each reader takes the buffer and a position and returns (value, next position).
# Corrupt input surfaces as IndexError/ValueError/UnicodeDecodeError, turned into
# DecodeError by the public functions.


def read_long(b: bytes, pos: int) -> tuple[int, int]:
    """Read a zig-zag varint at ``pos``."""
    byte = b[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = b[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _read_bytes(b: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_long(b, pos)
    end = pos + n
    if n < 0 or end > len(b):
        raise ValueError("length beyond the end of the record")
    return b[pos:end], end


def _read_str(b: bytes, pos: int) -> tuple[str, int]:
    raw, pos = _read_bytes(b, pos)
    return raw.decode(), pos


def _read_opt_bytes(b: bytes, pos: int) -> tuple[bytes | None, int]:
    branch = b[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise ValueError(f"bad union branch {branch}")
    return _read_bytes(b, pos + 1)


def _read_opt_long(b: bytes, pos: int) -> tuple[int | None, int]:
    if b[pos] == 0:
        return None, pos + 1
    return read_long(b, pos + 1)


def _read_opt_str(b: bytes, pos: int) -> tuple[str | None, int]:
    raw, pos = _read_opt_bytes(b, pos)
    return (None if raw is None else raw.decode()), pos


def _read_opt_failure(b: bytes, pos: int) -> tuple[FailureDetails | None, int]:
    branch = b[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise ValueError(f"bad union branch {branch}")
    error_type, pos = _read_str(b, pos + 1)
    message, pos = _read_str(b, pos)
    trace, pos = _read_opt_str(b, pos)
    return FailureDetails(error_type, message, trace), pos


def _read_event(b: bytes, pos: int) -> tuple[HistoryEvent, int]:
    index, pos = read_long(b, pos)
    kind = _KINDS[index] if 0 <= index < len(_KINDS) else None
    if kind is None:
        raise ValueError(f"event kind number {index} is unknown to this version")
    timestamp, pos = read_long(b, pos)
    seq, pos = read_long(b, pos)
    name, pos = _read_opt_str(b, pos)
    payload, pos = _read_opt_bytes(b, pos)
    failure, pos = _read_opt_failure(b, pos)
    instance_id, pos = _read_opt_str(b, pos)
    fire_at, pos = _read_opt_long(b, pos)
    attempt, pos = read_long(b, pos)
    execution_id, pos = _read_opt_str(b, pos)
    parent_execution_id, pos = _read_opt_str(b, pos)
    policy, pos = read_long(b, pos)
    if not 0 <= policy < len(_POLICIES):
        raise ValueError(f"id reuse policy number {policy} is out of range")
    version, pos = _read_opt_str(b, pos)
    heartbeat_timeout_ms, pos = _read_opt_long(b, pos)
    return HistoryEvent(
        kind,
        timestamp,
        seq,
        name,
        payload,
        failure,
        instance_id,
        fire_at,
        attempt,
        execution_id,
        parent_execution_id,
        _POLICIES[policy],
        version,
        heartbeat_timeout_ms,
    ), pos


def _read_status(b: bytes, pos: int) -> tuple[OrchestrationStatus, int]:
    instance_id, pos = _read_str(b, pos)
    name, pos = _read_str(b, pos)
    index, pos = read_long(b, pos)
    if not 0 <= index < len(_STATUSES):
        raise ValueError(f"runtime status number {index} is out of range")
    runtime_status = _STATUSES[index] or RuntimeStatus.PENDING
    input_, pos = _read_opt_bytes(b, pos)
    output, pos = _read_opt_bytes(b, pos)
    failure, pos = _read_opt_failure(b, pos)
    custom, pos = _read_opt_bytes(b, pos)
    created, pos = read_long(b, pos)
    updated, pos = read_long(b, pos)
    parent, pos = _read_opt_str(b, pos)
    execution_id, pos = _read_opt_str(b, pos)
    status = OrchestrationStatus(
        instance_id,
        name,
        runtime_status,
        input_,
        output,
        failure,
        custom,
        created,
        updated,
        parent,
        execution_id,
    )
    return status, pos


def _read_message(b: bytes, pos: int) -> tuple[tuple[str, HistoryEvent], int]:
    instance_id, pos = _read_str(b, pos)
    event, pos = _read_event(b, pos)
    return (instance_id, event), pos


_Task = tuple[str, int, int, str, bytes | None, int, str | None, int | None, int | None]


def _read_task(b: bytes, pos: int) -> tuple[_Task, int]:
    instance_id, pos = _read_str(b, pos)
    seq, pos = read_long(b, pos)
    attempt, pos = read_long(b, pos)
    name, pos = _read_str(b, pos)
    input_, pos = _read_opt_bytes(b, pos)
    scheduled_at, pos = read_long(b, pos)
    execution_id, pos = _read_opt_str(b, pos)
    deadline, pos = _read_opt_long(b, pos)
    heartbeat_timeout_ms, pos = _read_opt_long(b, pos)
    task = (
        instance_id,
        seq,
        attempt,
        name,
        input_,
        scheduled_at,
        execution_id,
        deadline,
        heartbeat_timeout_ms,
    )
    return task, pos


def _read_events(b: bytes, pos: int) -> tuple[list[HistoryEvent], int]:
    events: list[HistoryEvent] = []
    while True:
        count, pos = read_long(b, pos)
        if count == 0:
            return events, pos
        if count < 0:  # a block with its byte size (Avro allows it; fastavro never writes it)
            count = -count
            _, pos = read_long(b, pos)
        for _ in range(count):
            event, pos = _read_event(b, pos)
            events.append(event)


_State = tuple[OrchestrationStatus, int, int, int, int, list[HistoryEvent], str | None]


def _read_state(b: bytes, pos: int) -> tuple[_State, int]:
    status, pos = _read_status(b, pos)
    parent_seq, pos = read_long(b, pos)
    chunks, pos = read_long(b, pos)
    length, pos = read_long(b, pos)
    generation, pos = read_long(b, pos)
    pending, pos = _read_events(b, pos)
    parent_execution_id, pos = _read_opt_str(b, pos)
    return (status, parent_seq, chunks, length, generation, pending, parent_execution_id), pos


def _decode(what: str, data: bytes, read: Callable[[bytes, int], tuple[T, int]]) -> T:
    """Read one ``what`` body after the 10-byte header; every byte must be used."""
    try:
        value, pos = read(data, 10)
    except (IndexError, ValueError) as exc:
        raise DecodeError(f"corrupt Avro body for {what}: {exc}") from exc
    if pos != len(data):
        raise DecodeError(f"corrupt Avro body for {what}: {len(data) - pos} bytes left over")
    return value


def is_current(data: bytes, header: bytes) -> bool:
    """Whether ``data`` was written with the current schema (``header``: its 10-byte header)."""
    return data[:10] == header


def decode_message(data: bytes) -> tuple[str, HistoryEvent]:
    """``(instance_id, event)`` of an ``OrchestrationMessage`` in the current schema."""
    return _decode("OrchestrationMessage", data, _read_message)


def decode_status(data: bytes) -> OrchestrationStatus:
    """An ``InstanceStatus`` in the current schema."""
    return _decode("InstanceStatus", data, _read_status)


def decode_activity_task(data: bytes) -> _Task:
    """The fields of an ``ActivityTask`` in the current schema, in schema order."""
    return _decode("ActivityTask", data, _read_task)


def decode_chunk(data: bytes) -> list[HistoryEvent]:
    """The events of a ``HistoryChunk`` in the current schema."""
    return _decode("HistoryChunk", data, _read_events)


def decode_state(data: bytes) -> _State:
    """The fields of an ``InstanceState`` in the current schema, in schema order."""
    return _decode("InstanceState", data, _read_state)
