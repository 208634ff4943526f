"""Avro single-object encoding of every record durafka writes.

Schemas live in the top-level ``schemas/`` folder, are parsed once at import,
and every value starts with the single-object marker ``C3 01`` and the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema, so any Avro reader
with ``schemas/`` can decode the status stream. Readers resolve older writer
schemas (by fingerprint) against the current one: fields are only ever added
with defaults, which ``tests/codec/test_schema_evolution.py`` guards.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from durafka.errors import DecodeError
from durafka.resources import resource_dir

MARKER = b"\xc3\x01"
_HEADER = struct.Struct("<2sQ")

# Order matters: named types must be parsed before the schemas that use them.
SCHEMA_FILES = (
    "FailureDetails",
    "HistoryEvent",
    "OrchestrationMessage",
    "ActivityTask",
    "InstanceStatus",
    "InstanceState",
    "HistoryChunk",
    "DeadLetter",
    "EntityState",
)


def schema_dir() -> Path:
    """Where the ``.avsc`` files are (``DURAFKA_SCHEMA_DIR`` overrides)."""
    env = os.environ.get("DURAFKA_SCHEMA_DIR")
    if env:
        return Path(env)
    return resource_dir("schemas")


def _crc64_avro(data: bytes) -> int:
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp & 0xFFFFFFFFFFFFFFFF)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def fingerprint(parsed_schema: dict[str, Any]) -> int:
    """The CRC-64-AVRO fingerprint of a parsed schema's canonical form."""
    return _crc64_avro(to_parsing_canonical_form(parsed_schema).encode())


class SchemaCodec:
    """Encoder/decoder for one record type in single-object encoding.

    Attributes:
        name: the schema's full name, e.g. ``io.durafka.HistoryEvent``.
        schema: the parsed current schema (the reader schema).
    """

    def __init__(self, name: str, schema: dict[str, Any]) -> None:
        self.name = name
        self.schema = schema
        self.fingerprint = fingerprint(schema)
        self._header = _HEADER.pack(MARKER, self.fingerprint)
        # Older writer schemas of the same record, by fingerprint (schema evolution).
        self.writers: dict[int, dict[str, Any]] = {self.fingerprint: schema}

    def add_writer_schema(self, schema: dict[str, Any]) -> None:
        """Accept data written with an older (compatible) version of this schema."""
        # Same fingerprint as the current schema: keep the current one, which reads
        # without schema resolution (several times faster).
        self.writers.setdefault(fingerprint(schema), schema)

    def encode(self, record: dict[str, Any]) -> bytes:
        """Encode a record dict: marker, fingerprint, Avro binary body."""
        buf = io.BytesIO()
        buf.write(self._header)
        schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode single-object encoded bytes; ``DecodeError`` says what is wrong."""
        if len(data) < 10 or data[:2] != MARKER:
            raise DecodeError(f"not an Avro single-object encoded {self.name} (bad marker)")
        fp = _HEADER.unpack_from(data)[1]
        writer = self.writers.get(fp)
        if writer is None:
            raise DecodeError(
                f"unknown schema fingerprint {fp:016x} for {self.name}: written by a newer or "
                "foreign durafka version? Deploy the schemas/ that wrote it."
            )
        try:
            buf = io.BytesIO(data)
            buf.seek(10)
            reader = None if writer is self.schema else self.schema
            return cast("dict[str, Any]", schemaless_reader(buf, writer, reader))
        except Exception as exc:
            raise DecodeError(f"corrupt Avro body for {self.name}: {exc}") from exc


def parse_schema_set(directory: Path) -> dict[str, dict[str, Any]]:
    """Parse the ``.avsc`` files of one folder (named types shared), by short name."""
    named: dict[str, Any] = {}
    parsed: dict[str, dict[str, Any]] = {}
    for short in SCHEMA_FILES:
        path = directory / f"{short}.avsc"
        if path.exists():
            schema = parse_schema(json.loads(path.read_text()), named_schemas=named)
            parsed[short] = cast("dict[str, Any]", schema)
    return parsed


def load_schemas(directory: Path | None = None) -> dict[str, SchemaCodec]:
    """Codecs of the current schemas, accepting data written with every released version.

    Released versions live in ``schemas/versions/<version>/``; a schema change adds
    a new version folder (``tests/codec/test_schema_evolution.py`` insists).
    """
    directory = directory or schema_dir()
    codecs = {
        short: SchemaCodec(f"io.durafka.{short}", schema)
        for short, schema in parse_schema_set(directory).items()
    }
    versions = directory / "versions"
    if versions.is_dir():
        for version_dir in sorted(p for p in versions.iterdir() if p.is_dir()):
            for short, schema in parse_schema_set(version_dir).items():
                codecs[short].add_writer_schema(schema)
    return codecs


_CODECS: dict[str, SchemaCodec] | None = None


def codec(short_name: str) -> SchemaCodec:
    """The codec of one schema (parsed once per process)."""
    global _CODECS
    if _CODECS is None:
        _CODECS = load_schemas()
    return _CODECS[short_name]


def bound(
    short_name: str,
) -> tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], dict[str, Any]]]:
    """``(encode, decode)`` of one schema, for hot paths that want no lookups."""
    c = codec(short_name)
    return c.encode, c.decode
