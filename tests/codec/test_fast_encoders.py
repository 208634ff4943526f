"""The hand-written encoders write exactly the bytes fastavro writes for the schema."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_writer
from fastavro.utils import generate_many
from hypothesis import given
from hypothesis import strategies as st

from durafka.codec import fast
from durafka.codec.avro import codec
from durafka.codec.records import (
    event_from_dict,
    event_to_dict,
    status_from_dict,
    status_to_dict,
)
from durafka.errors import DecodeError, FailureDetails
from durafka.runtime.history import EventKind, HistoryEvent, IdReusePolicy
from durafka.status import OrchestrationStatus, RuntimeStatus


def _fastavro(short: str, record: dict) -> bytes:  # type: ignore[type-arg]
    c = codec(short)
    buf = io.BytesIO()
    buf.write(c._header)
    schemaless_writer(buf, c.schema, record)
    return buf.getvalue()


_texts = st.text(max_size=20)
_opt_text = st.none() | _texts
_opt_bytes = st.none() | st.binary(max_size=20)
_longs = st.integers(min_value=-(2**62), max_value=2**62)
_ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_failures = st.none() | st.builds(FailureDetails, _texts, _texts, _opt_text)
_events = st.builds(
    HistoryEvent,
    st.sampled_from(list(EventKind)),
    _longs,
    _ints,
    _opt_text,
    _opt_bytes,
    _failures,
    _opt_text,
    st.none() | _longs,
    _ints,
    _opt_text,
    _opt_text,
    st.sampled_from(list(IdReusePolicy)),
    _opt_text,
    st.none() | _longs,
)
_statuses = st.builds(
    OrchestrationStatus,
    _texts,
    _texts,
    st.sampled_from(list(RuntimeStatus)),
    _opt_bytes,
    _opt_bytes,
    _failures,
    _opt_bytes,
    _longs,
    _longs,
    _opt_text,
    _opt_text,
)
_STATUS = OrchestrationStatus(
    "i-1", "hello", RuntimeStatus.COMPLETED, None, b'"hi"', None, None, 1, 2, None
)


@given(_texts, _events)
def test_message_bytes_equal_fastavro(instance_id: str, event: HistoryEvent) -> None:
    expected = _fastavro(
        "OrchestrationMessage", {"instance_id": instance_id, "event": event_to_dict(event)}
    )
    assert fast.encode_message(instance_id, event) == expected


@given(st.lists(_events, max_size=5))
def test_chunk_bytes_equal_fastavro(events: list[HistoryEvent]) -> None:
    expected = _fastavro("HistoryChunk", {"events": [event_to_dict(e) for e in events]})
    assert fast.encode_chunk(events) == expected


@given(_statuses)
def test_status_bytes_equal_fastavro(status: OrchestrationStatus) -> None:
    assert fast.encode_status(status) == _fastavro("InstanceStatus", status_to_dict(status))


@given(_statuses, _ints, _ints, _ints, _ints, st.lists(_events, max_size=3), _opt_text)
def test_state_bytes_equal_fastavro(  # type: ignore[no-untyped-def]
    status, parent_seq, chunks, length, generation, pending, parent_execution
) -> None:
    record = {
        "status": status_to_dict(status),
        "parent_seq": parent_seq,
        "history_chunks": chunks,
        "history_length": length,
        "generation": generation,
        "pending_events": [event_to_dict(e) for e in pending],
        "parent_execution_id": parent_execution,
    }
    fields = (status, parent_seq, chunks, length, generation, pending, parent_execution)
    encoded, none = fast.encode_state_and_status(*fields, with_status=False)
    assert encoded == _fastavro("InstanceState", record) and none is None
    # The processor's write encodes the status once for the header and H.status.
    both = fast.encode_state_and_status(*fields, with_status=True)
    assert both == (encoded, _fastavro("InstanceStatus", record["status"]))


def test_activity_task_bytes_equal_fastavro() -> None:
    for record in generate_many(codec("ActivityTask").schema, 50):
        encoded = fast.encode_activity_task(
            record["instance_id"],
            record["seq"],
            record["attempt"],
            record["name"],
            record["input"],
            record["scheduled_at"],
            record["execution_id"],
            record["deadline"],
            record["heartbeat_timeout_ms"],
        )
        assert encoded == _fastavro("ActivityTask", record)


def test_generated_events_round_trip() -> None:
    for record in generate_many(codec("HistoryEvent").schema, 50):
        if record["kind"] == "UNKNOWN":
            continue
        event = event_from_dict(record)
        out = bytearray()
        fast.write_event(event, out)
        assert bytes(out) == _fastavro("HistoryEvent", record)[10:]
    for record in generate_many(codec("InstanceStatus").schema, 20):
        if record["runtime_status"] == "UNKNOWN":
            continue
        status = status_from_dict(record)
        assert fast.encode_status(status) == _fastavro("InstanceStatus", record)


# -- the decoders read what fastavro reads -----------------------------------------------


@given(_texts, _events)
def test_message_decodes_like_fastavro(instance_id: str, event: HistoryEvent) -> None:
    data = fast.encode_message(instance_id, event)
    record = codec("OrchestrationMessage").decode(data)
    assert fast.decode_message(data) == (record["instance_id"], event_from_dict(record["event"]))
    assert fast.decode_message(data) == (instance_id, event)


@given(st.lists(_events, max_size=5))
def test_chunk_decodes_like_fastavro(events: list[HistoryEvent]) -> None:
    data = fast.encode_chunk(events)
    record = codec("HistoryChunk").decode(data)
    assert fast.decode_chunk(data) == [event_from_dict(e) for e in record["events"]] == events


@given(_statuses)
def test_status_decodes_like_fastavro(status: OrchestrationStatus) -> None:
    data = fast.encode_status(status)
    assert fast.decode_status(data) == status_from_dict(codec("InstanceStatus").decode(data))
    assert fast.decode_status(data) == status


@given(_statuses, _ints, _ints, _ints, _ints, st.lists(_events, max_size=3), _opt_text)
def test_state_decodes_to_what_was_encoded(  # type: ignore[no-untyped-def]
    status, parent_seq, chunks, length, generation, pending, parent_execution
) -> None:
    fields = (status, parent_seq, chunks, length, generation, pending, parent_execution)
    data, _ = fast.encode_state_and_status(*fields, with_status=False)
    assert fast.decode_state(data) == fields
    record = codec("InstanceState").decode(data)
    assert fast.decode_state(data)[0] == status_from_dict(record["status"])


def test_activity_task_decodes_like_fastavro() -> None:
    for record in generate_many(codec("ActivityTask").schema, 50):
        data = _fastavro("ActivityTask", record)
        fields = (
            "instance_id",
            "seq",
            "attempt",
            "name",
            "input",
            "scheduled_at",
            "execution_id",
            "deadline",
            "heartbeat_timeout_ms",
        )
        assert fast.decode_activity_task(data) == tuple(record[f] for f in fields)


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (fast.decode_status, fast.STATUS_HEADER + b"\x06abc"),  # truncated
        (fast.decode_status, fast.encode_status(_STATUS) + b"\x00"),  # bytes left over
        (fast.decode_message, fast.MESSAGE_HEADER + b"\x02a\x7f"),  # event kind out of range
        (fast.decode_message, fast.MESSAGE_HEADER + b"\x02a\x01"),  # negative kind
        (fast.decode_chunk, fast.CHUNK_HEADER + b"\x02"),  # one event announced, none there
        (fast.decode_activity_task, fast.TASK_HEADER + b"\x02\xff"),  # invalid UTF-8 id
    ],
)
def test_corrupt_bodies_raise_decode_error(decode, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError, match="corrupt Avro body"):
        decode(data)
