"""Schemas only evolve compatibly: data written by every released version stays readable."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.utils import generate_many

from durafka.codec.avro import (
    LEGACY_FINGERPRINT_VERSIONS,
    MARKER,
    SCHEMA_FILES,
    fingerprint,
    legacy_fingerprints,
    load_schemas,
    parse_schema_set,
    parsing_canonical_form,
    resolved_schema,
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
    resolved = parse_schema_set(version)[short]
    old = parse_schema(resolved, named_schemas={})
    fingerprints = [fingerprint(resolved)]
    if version.name in LEGACY_FINGERPRINT_VERSIONS:
        fingerprints.append(legacy_fingerprints(version)[short])
    codec = load_schemas()[short]
    for fp in fingerprints:
        for record in generate_many(old, 25):
            buf = io.BytesIO()
            buf.write(MARKER + fp.to_bytes(8, "little"))
            schemaless_writer(buf, old, record)
            decoded = codec.decode(buf.getvalue())
            assert set(decoded) >= {f["name"] for f in old["fields"]}


def test_fingerprints_are_the_avro_specification_s() -> None:
    """CRC-64-AVRO of the Parsing Canonical Form of the fully resolved schema.

    The expected values are what Java's ``SchemaNormalization.parsingFingerprint64``
    gives for the v1 schemas (Avro 1.12), and the canonical form's own fingerprint
    check: the empty string's is the algorithm's initial value.
    """
    v1 = schema_dir() / "versions" / "v1"
    assert fingerprint(resolved_schema("OrchestrationMessage", v1)) == 0x37749C21C3989D54
    assert fingerprint(resolved_schema("InstanceStatus", v1)) == 0x2804F9170A4EE8FF
    # durafka 0.1's own fingerprints of the same schemas, still accepted for v1 data:
    assert legacy_fingerprints(v1)["OrchestrationMessage"] == 0x2B6D0A7F60D212D4
    assert legacy_fingerprints(v1)["InstanceStatus"] == 0x2B21A9264B48AC22


def test_a_named_type_is_defined_once_in_a_resolved_schema() -> None:
    """FailureDetails is used twice by InstanceState: defined at its first use only."""
    canonical = parsing_canonical_form(resolved_schema("InstanceState"))
    assert canonical.count('{"name":"io.durafka.FailureDetails"') == 1
    assert canonical.count('"io.durafka.FailureDetails"') == 2


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
    codec.add_writer_schema(raw)
    buf = io.BytesIO()
    buf.write(MARKER + fingerprint(raw).to_bytes(8, "little"))
    record = {"instance_id": "i", "seq": 1, "name": "a", "input": None, "scheduled_at": 5}
    schemaless_writer(buf, older, record)
    assert codec.decode(buf.getvalue())["attempt"] == 1  # the default of the new field


def test_standalone_schemas_are_the_resolved_current_ones() -> None:
    """schemas/standalone/: one self-contained file per record, for other languages.

    Regenerate with ``python -m durafka.codec.avro`` after a schema change.
    """
    for short in SCHEMA_FILES:
        committed = json.loads((schema_dir() / "standalone" / f"{short}.avsc").read_text())
        assert committed == resolved_schema(short), (
            f"schemas/standalone/{short}.avsc is stale: run python -m durafka.codec.avro"
        )
        # Self-contained: parses with no other schema known.
        parse_schema(committed, named_schemas={})
