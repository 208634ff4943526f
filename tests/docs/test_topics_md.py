"""docs/topics.md, checked: every record, byte and partition it shows, and what they do.

The document tags its examples: ```` ```json record=NAME schema=RECORD ```` is a
record as field values (``bytes`` fields as the text they hold, fields not shown
at their defaults); ```` ```text bytes=NAME ```` the single-object encoding of
record NAME; ```` ```text partitions ```` and ```` ```text fingerprints ```` tables.
Encoding uses fastavro and ``schemas/standalone/`` only, as another service would;
decoding uses durafka's own codec. On the real broker, the documented records
are produced byte for byte to the parcels app, and what it writes back is
compared with the documented status, entity and dead letter.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

import durafka
from durafka.codec.avro import codec
from durafka.codec.records import decode_entity, decode_message, decode_status
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind
from durafka.status import RuntimeStatus
from examples import parcels
from tests.support.apps import make_app
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import produce_raw
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "topics.md"
STANDALONE = REPO_ROOT / "schemas" / "standalone"
#: The task hub and partition count the document's examples assume.
DOC_HUB = "parcels"
DOC_PARTITIONS = 8

_BLOCK = re.compile(r"^```(\w+) ([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> dict[str, str]:
    """Tagged code blocks by tag: ``record=start``, ``bytes=start``, ``partitions``..."""
    out: dict[str, str] = {}
    for _, info, body in _BLOCK.findall(DOC.read_text()):
        tag = info.split()[0]
        assert tag not in out, f"two blocks tagged {tag} in {DOC}"
        out[tag] = body
    return out


BLOCKS = _blocks()
RECORDS = sorted(tag.split("=", 1)[1] for tag in BLOCKS if tag.startswith("record="))
ENCODED = sorted(tag.split("=", 1)[1] for tag in BLOCKS if tag.startswith("bytes="))


def _schema(record: str) -> Any:
    return parse_schema(json.loads((STANDALONE / f"{record}.avsc").read_text()))


def _schema_of(name: str) -> str:
    for _, info, _ in _BLOCK.findall(DOC.read_text()):
        if info.split()[0] == f"record={name}":
            return dict(part.split("=", 1) for part in info.split())["schema"]
    raise KeyError(name)


def _bytes_fields(schema: Any, value: Any) -> Any:
    """The documented value with its ``bytes`` fields' text as UTF-8 bytes."""
    if isinstance(schema, list):
        if value is None:
            return None
        if isinstance(value, str) and "bytes" in schema and "string" not in schema:
            return value.encode()
        named = [s for s in schema if isinstance(s, dict)]
        return _bytes_fields(named[0], value) if len(named) == 1 else value
    if schema == "bytes" and isinstance(value, str):
        return value.encode()
    if isinstance(schema, dict) and schema.get("type") == "record":
        return {
            f["name"]: _bytes_fields(f["type"], value[f["name"]])
            for f in schema["fields"]
            if f["name"] in value
        }
    if isinstance(schema, dict) and schema.get("type") == "array":
        return [_bytes_fields(schema["items"], v) for v in value]
    return value


def documented(name: str) -> tuple[str, dict[str, Any]]:
    """``(schema name, record)`` of the example ``record=NAME``, with bytes as bytes."""
    record = _schema_of(name)
    value = json.loads(BLOCKS[f"record={name}"])
    if name == "dead-letter":  # its value is the start record, shown by reference
        value["value"] = _hex(BLOCKS["bytes=start"]).decode("latin-1")
    converted = _bytes_fields(_schema(record), value)
    if name == "dead-letter":
        converted["value"] = _hex(BLOCKS["bytes=start"])
    return record, converted


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def encode(record: str, value: dict[str, Any]) -> bytes:
    """Single-object encoding with fastavro and the standalone schema, as another service."""
    schema = _schema(record)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    schemaless_writer(buf, schema, value)
    return buf.getvalue()


def test_the_document_has_the_examples_it_promises() -> None:
    assert RECORDS == ["dead-letter", "entity", "raise", "signal", "start", "status", "terminate"]
    assert ENCODED == ["raise", "signal", "start", "terminate"]
    assert {"partitions", "fingerprints"} <= set(BLOCKS)


@pytest.mark.parametrize("name", ENCODED)
def test_the_bytes_shown_are_the_encoding_of_the_record_shown(name: str) -> None:
    record, value = documented(name)
    assert encode(record, value).hex(" ") == _hex(BLOCKS[f"bytes={name}"]).hex(" ")


@pytest.mark.parametrize("name", ENCODED)
def test_durafka_reads_the_documented_records_as_documented(name: str) -> None:
    _, value = documented(name)
    iid, event = decode_message(_hex(BLOCKS[f"bytes={name}"]))
    assert iid == value["instance_id"]
    shown = value["event"]
    assert event.kind is EventKind[shown["kind"]]
    assert event.timestamp == shown["timestamp"]
    assert (event.name, event.payload) == (shown.get("name"), shown.get("payload"))
    assert event.execution_id == shown.get("execution_id")
    assert event.instance_id is None and event.seq == -1


@pytest.mark.parametrize("name", ["status", "entity", "dead-letter"])
def test_the_records_other_services_read_are_valid_and_decode(name: str) -> None:
    record, value = documented(name)
    data = encode(record, value)
    assert data[2:10] == codec(record).fingerprint.to_bytes(8, "little")
    decoded = schemaless_reader(io.BytesIO(data[10:]), _schema(record))
    assert {k: decoded[k] for k in value} == value
    if name == "status":
        status = decode_status(data)
        assert status.runtime_status is RuntimeStatus.COMPLETED
        assert status.output["courier"] == "Bo"
    elif name == "entity":
        assert decode_entity(data).state == b"3"


def test_the_fingerprints_are_the_current_schemas() -> None:
    for line in BLOCKS["fingerprints"].strip().splitlines():
        record, *octets = line.split()
        assert codec(record).fingerprint.to_bytes(8, "little").hex(" ") == " ".join(octets)


def test_the_partitions_are_murmur2_of_the_utf8_key() -> None:
    lines = BLOCKS["partitions"].strip().splitlines()[1:]
    assert lines
    for line in lines:
        key, *octets, of_8, of_12 = line.split()
        assert bytes.fromhex("".join(octets)) == key.encode()
        assert (int(of_8), int(of_12)) == (
            partition_for(key.encode(), 8),
            partition_for(key.encode(), 12),
        )


def test_the_documented_records_work_on_the_real_broker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Produced byte for byte to the parcels app: start, raise, terminate, signal."""
    hub = f"d{uuid.uuid4().hex[:10]}"
    app = make_app(
        kafka_bootstrap, hub, tmp_path / "state", parcels.app.registry, partitions=DOC_PARTITIONS
    )
    topic = f"{hub}.orchestrations"

    def produce(name: str, key: bytes | None = None) -> None:
        _, value = documented(name)
        key = key if key is not None else value["instance_id"].encode()
        produce_raw(
            app, topic, partition_for(key, DOC_PARTITIONS), key, _hex(BLOCKS[f"bytes={name}"])
        )

    try:
        with app.running(), app.sync_client() as client:
            produce("start")
            produce("raise")
            client.start_new(parcels.deliver, parcels.Parcel("p-2", "Cy"), instance_id="p-2")
            produce("terminate")
            produce("signal")

            status = client.wait_for_status("p-1", timeout=60)
            _, shown = documented("status")
            assert {
                "instance_id": status.instance_id,
                "name": status.name,
                "runtime_status": status.runtime_status.value,
                "input": status.serialized_input,
                "output": status.serialized_output,
                "custom_status": status.serialized_custom_status,
                "execution_id": status.execution_id,
            } == {k: v for k, v in shown.items() if k not in {"created_at", "last_updated_at"}}

            terminated = client.wait_for_status("p-2", timeout=60)
            assert terminated.runtime_status is RuntimeStatus.TERMINATED
            assert terminated.output == "cancelled by the sender"

            shelf = durafka.EntityId("Shelf", "A1")
            wait_until(lambda: client.get_entity(shelf) is not None, timeout=60)
            found = client.get_entity(shelf)
            _, entity = documented("entity")
            assert found is not None
            assert (found.entity_id.name, found.entity_id.key, found.serialized_state) == (
                entity["name"],
                entity["key"],
                entity["state"],
            )
            assert (found.locked_by, found.queued, found.error_count) == (None, 0, 0)

            # The start with another key: a dead letter as documented.
            produce("start", key=b"p-9")
            [letter] = read_dead_letters(app.transport, hub)
            _, shown_letter = documented("dead-letter")
            assert letter["reason"] == shown_letter["reason"]
            assert letter["source_topic"] == topic
            assert letter["source_partition"] == partition_for(b"p-9", DOC_PARTITIONS)
            for field in ("key", "value", "key_size", "value_size"):
                assert letter[field] == shown_letter[field], field
            assert letter["written_by"].startswith("processor ")
    finally:
        app.close()
