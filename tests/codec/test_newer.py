"""Telling a newer release's record apart from garbage (durafka/codec/newer.py)."""

from __future__ import annotations

import json

import pytest

from durafka.codec.avro import MARKER, SCHEMA_FILES, schema_dir
from durafka.codec.newer import avro_string, written_by_newer_release
from durafka.codec.records import (
    ActivityTask,
    EntityRecord,
    InstanceState,
    encode_activity_task,
    encode_chunk,
    encode_entity,
    encode_message,
    encode_state,
)
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import OrchestrationStatus, RuntimeStatus

NOW = 1_700_000_000_000
#: A fingerprint no release wrote.
UNKNOWN = (0x0BADC0FFEE).to_bytes(8, "little")


def as_newer(value: bytes) -> bytes:
    """``value`` as a newer release would write it: another fingerprint, a field appended."""
    return MARKER + UNKNOWN + value[10:] + b"\x02"


def test_a_newer_message_starts_with_the_id_of_its_key() -> None:
    value = as_newer(encode_message("order-1", HistoryEvent(EventKind.EVENT_RAISED, NOW)))
    assert written_by_newer_release(value, "OrchestrationMessage", "order-1")
    assert not written_by_newer_release(value, "OrchestrationMessage", "order-2")
    assert not written_by_newer_release(value, "OrchestrationMessage", None)
    assert not written_by_newer_release(value, "InstanceStatus", "order-1")  # not listed


def test_a_record_of_another_known_type_is_not_a_newer_release_s() -> None:
    # An ActivityTask on H.orchestrations starts with its instance id too.
    task = encode_activity_task(ActivityTask("order-1", 0, 1, "charge", None, NOW))
    assert not written_by_newer_release(task, "OrchestrationMessage", "order-1")


def test_a_newer_header_and_entity_start_with_their_ids() -> None:
    status = OrchestrationStatus("i-1", "wf", RuntimeStatus.RUNNING, None, None, None, None, 1, 2)
    header = as_newer(encode_state(InstanceState(status)))
    assert written_by_newer_release(header, "io.durafka.InstanceState", "i-1")
    assert not written_by_newer_release(header, "io.durafka.InstanceState", "i-2")
    entity = as_newer(encode_entity(EntityRecord("Counter", "a@b")))
    assert written_by_newer_release(entity, "EntityState", "@Counter@a@b")
    assert not written_by_newer_release(entity, "EntityState", "@Counter@a")
    assert not written_by_newer_release(entity, "EntityState", "no-entity-id")


def test_a_newer_chunk_starts_with_a_plausible_event() -> None:
    chunk = as_newer(encode_chunk([HistoryEvent(EventKind.ORCHESTRATOR_STARTED, NOW)]))
    assert written_by_newer_release(chunk, "HistoryChunk", None)
    # Garbage behind the marker: a count, then no plausible kind and time.
    assert not written_by_newer_release(MARKER + UNKNOWN + b"t durafka wrote", "HistoryChunk", None)
    assert not written_by_newer_release(MARKER + UNKNOWN + b"\x00", "HistoryChunk", None)
    assert not written_by_newer_release(MARKER + UNKNOWN + b"\x02\x04", "HistoryChunk", None)


@pytest.mark.parametrize(
    "value", [b"", MARKER, MARKER + UNKNOWN, b"\x00\x01" + UNKNOWN + avro_string("x")]
)
def test_short_values_and_other_markers_are_garbage(value: bytes) -> None:
    assert not written_by_newer_release(value, "OrchestrationMessage", "x")


def test_avro_strings_are_zigzag_length_and_utf8() -> None:
    assert avro_string("") == b"\x00"
    assert avro_string("ab") == b"\x04ab"
    assert avro_string("é" * 64) == b"\x80\x02" + "é".encode() * 64


#: The first fields the rule relies on: a newer release may add fields after them only.
FIRST_FIELDS = {
    "OrchestrationMessage": ["instance_id"],
    "ActivityTask": ["instance_id"],
    "InstanceState": ["status"],
    "InstanceStatus": ["instance_id"],
    "EntityState": ["name", "key"],
    "HistoryChunk": ["events"],
    "HistoryEvent": ["kind", "timestamp"],
}


@pytest.mark.parametrize(
    "folder",
    [schema_dir(), *sorted(p for p in (schema_dir() / "versions").iterdir() if p.is_dir())],
    ids=lambda p: p.name,
)
def test_every_release_keeps_the_first_fields(folder) -> None:  # type: ignore[no-untyped-def]
    assert set(FIRST_FIELDS) <= set(SCHEMA_FILES)
    for short, first in FIRST_FIELDS.items():
        fields = json.loads((folder / f"{short}.avsc").read_text())["fields"]
        assert [f["name"] for f in fields[: len(first)]] == first, (
            f"{folder.name}/{short}.avsc: the first fields must stay {first} "
            "(durafka/codec/newer.py tells newer releases from garbage by them)"
        )
