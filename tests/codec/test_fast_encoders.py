"""The hand-written encoders write exactly the bytes fastavro writes for the schema."""

from __future__ import annotations

import io

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
from durafka.errors import FailureDetails
from durafka.runtime.history import EventKind, HistoryEvent
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


@given(_statuses, _ints, _ints, _ints, _ints, st.lists(_events, max_size=3))
def test_state_bytes_equal_fastavro(  # type: ignore[no-untyped-def]
    status, parent_seq, chunks, length, generation, pending
) -> None:
    record = {
        "status": status_to_dict(status),
        "parent_seq": parent_seq,
        "history_chunks": chunks,
        "history_length": length,
        "generation": generation,
        "pending_events": [event_to_dict(e) for e in pending],
    }
    encoded = fast.encode_state(status, parent_seq, chunks, length, generation, pending)
    assert encoded == _fastavro("InstanceState", record)


def test_activity_task_bytes_equal_fastavro() -> None:
    for record in generate_many(codec("ActivityTask").schema, 50):
        encoded = fast.encode_activity_task(
            record["instance_id"],
            record["seq"],
            record["attempt"],
            record["name"],
            record["input"],
            record["scheduled_at"],
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
