"""Schemas only evolve compatibly: data written by every released version stays readable."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import schemaless_writer
from fastavro.utils import generate_many

from durafka.codec.avro import (
    MARKER,
    SCHEMA_FILES,
    fingerprint,
    load_schemas,
    parse_schema_set,
    schema_dir,
)
from durafka.errors import DecodeError

VERSIONS = sorted(p for p in (schema_dir() / "versions").iterdir() if p.is_dir())


def test_current_schemas_are_a_released_version() -> None:
    """A schema change must be snapshotted as a new folder under schemas/versions/."""
    current = {s: json.loads((schema_dir() / f"{s}.avsc").read_text()) for s in SCHEMA_FILES}
    latest = VERSIONS[-1]
    snapshot = {s: json.loads((latest / f"{s}.avsc").read_text()) for s in SCHEMA_FILES}
    assert current == snapshot, (
        f"schemas/ differs from its latest snapshot {latest.name}: copy schemas/*.avsc into a "
        "new schemas/versions/vN folder (new fields need defaults)"
    )


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
@pytest.mark.parametrize("short", SCHEMA_FILES)
def test_every_released_version_is_readable(version, short: str) -> None:  # type: ignore[no-untyped-def]
    old = parse_schema_set(version)[short]
    codec = load_schemas()[short]
    for record in generate_many(old, 25):
        buf = io.BytesIO()
        buf.write(MARKER + fingerprint(old).to_bytes(8, "little"))
        schemaless_writer(buf, old, record)
        decoded = codec.decode(buf.getvalue())
        assert set(decoded) >= {f["name"] for f in old["fields"]}


def test_unknown_fingerprint_is_a_clear_decode_error() -> None:
    codec = load_schemas()["HistoryEvent"]
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode(MARKER + (12345).to_bytes(8, "little") + b"\x00\x00")


def test_bad_marker_is_a_clear_decode_error() -> None:
    with pytest.raises(DecodeError, match="marker"):
        load_schemas()["InstanceStatus"].decode(b"{json: not avro}")


def test_roundtrip_of_every_schema() -> None:
    for short, codec in load_schemas().items():
        for record in generate_many(codec.schema, 10):
            assert codec.decode(codec.encode(record)) == record, short


def test_an_added_field_with_default_reads_old_data() -> None:
    """What a future release does: add a field with a default; old records still decode."""
    from fastavro import parse_schema

    codec = load_schemas()["ActivityTask"]
    raw = json.loads((schema_dir() / "ActivityTask.avsc").read_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "attempt"]
    older = parse_schema(raw)
    codec.add_writer_schema(older)
    buf = io.BytesIO()
    buf.write(MARKER + fingerprint(older).to_bytes(8, "little"))
    record = {"instance_id": "i", "seq": 1, "name": "a", "input": None, "scheduled_at": 5}
    schemaless_writer(buf, older, record)
    assert codec.decode(buf.getvalue())["attempt"] == 1  # the default of the new field
