"""Avro single-object encoding of every record durafka writes.

Schemas live in the top-level ``schemas/`` folder, are parsed once at import,
and every value starts with the single-object marker ``C3 01`` and the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema: the fingerprint of
the Parsing Canonical Form of the *fully resolved* schema, as the Avro
specification defines it and Java's ``SchemaNormalization.parsingFingerprint64``
computes it, so any Avro library can read and write durafka's records.

The files in ``schemas/`` define each named type once and refer to it by name
elsewhere (``"io.durafka.HistoryEvent"``); :func:`resolved_schema` inlines
every named type at its first use, which is what the fingerprint is taken of
and what ``schemas/standalone/`` holds for other languages (one self-contained
file per record, parsable without knowing a load order).

Readers resolve older writer schemas (by fingerprint) against the current one:
fields are only ever added with defaults, which
``tests/codec/test_schema_evolution.py`` guards. Records written before
durafka used standard fingerprints (schema version ``v1``) carry a
fingerprint of the canonical form with named references left as names; those
fingerprints are accepted for ``v1``'s schemas.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from durafka.errors import DecodeError, UnknownSchemaError
from durafka.resources import resource_dir

MARKER = b"\xc3\x01"
_HEADER = struct.Struct("<2sQ")
NAMESPACE = "io.durafka"

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

#: Schema versions whose records were written with the non-standard fingerprints of
#: durafka 0.1 (canonical form with named references left as names).
LEGACY_FINGERPRINT_VERSIONS = frozenset({"v1"})

_NAMED = ("record", "enum", "fixed")


def schema_dir() -> Path:
    """Where the ``.avsc`` files are (``DURAFKA_SCHEMA_DIR`` overrides)."""
    env = os.environ.get("DURAFKA_SCHEMA_DIR")
    if env:
        return Path(env)
    return resource_dir("schemas")


def _crc64_table() -> list[int]:
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp & 0xFFFFFFFFFFFFFFFF)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO of ``data`` (the Avro specification's fingerprint function)."""
    fp = 0xC15D213AA4D7A795
    table = _CRC64_TABLE
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def resolved_schema(short_name: str, directory: Path | None = None) -> dict[str, Any]:
    """The schema of ``short_name`` with every named type defined at its first use.

    Self-contained (Avro's "fully resolved" form): ``Schema.Parser().parse`` in
    Java, ``fastavro.parse_schema`` or any other library reads it on its own.
    """
    directory = directory or schema_dir()
    definitions: dict[str, dict[str, Any]] = {}
    for short in SCHEMA_FILES:
        path = directory / f"{short}.avsc"
        if path.exists():
            raw = json.loads(path.read_text())
            definitions[_full_name(raw["name"], raw.get("namespace"))] = raw
    root = definitions.get(_full_name(short_name, NAMESPACE))
    if root is None:
        raise KeyError(f"no schema {short_name!r} in {directory}")
    defined: set[str] = set()
    return cast("dict[str, Any]", _inline(copy.deepcopy(root), None, definitions, defined))


def _inline(
    schema: Any, namespace: str | None, definitions: dict[str, dict[str, Any]], defined: set[str]
) -> Any:
    if isinstance(schema, str):
        full = _full_name(schema, namespace)
        if full in definitions and full not in defined:
            return _inline(copy.deepcopy(definitions[full]), namespace, definitions, defined)
        return full if full in definitions else schema
    if isinstance(schema, list):
        return [_inline(branch, namespace, definitions, defined) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in _NAMED:
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        defined.add(full)
        namespace = full.rpartition(".")[0] or None
        if kind == "record":
            for field in schema.get("fields", []):
                field["type"] = _inline(field["type"], namespace, definitions, defined)
        return schema
    if kind == "array":
        schema["items"] = _inline(schema["items"], namespace, definitions, defined)
    elif kind == "map":
        schema["values"] = _inline(schema["values"], namespace, definitions, defined)
    elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind in definitions):
        schema["type"] = _inline(kind, namespace, definitions, defined)
    return schema


def parsing_canonical_form(resolved: dict[str, Any]) -> str:
    """The Parsing Canonical Form of a resolved schema (see :func:`resolved_schema`)."""
    return to_parsing_canonical_form(parse_schema(resolved, named_schemas={}))


def fingerprint(resolved: dict[str, Any]) -> int:
    """The standard CRC-64-AVRO fingerprint of a resolved schema (as Java computes it)."""
    return crc64_avro(parsing_canonical_form(resolved).encode())


def legacy_fingerprints(directory: Path) -> dict[str, int]:
    """The fingerprints durafka 0.1 wrote for one folder's schemas (non-standard).

    It parsed the files in :data:`SCHEMA_FILES` order, named types shared, and
    fingerprinted the canonical form with named references left as names, so a
    schema's fingerprint did not change when a type it refers to did.
    """
    named: dict[str, Any] = {}
    out: dict[str, int] = {}
    for short in SCHEMA_FILES:
        path = directory / f"{short}.avsc"
        if path.exists():
            parsed = parse_schema(json.loads(path.read_text()), named_schemas=named)
            out[short] = crc64_avro(to_parsing_canonical_form(parsed).encode())
    return out


class SchemaCodec:
    """Encoder/decoder for one record type in single-object encoding.

    Args:
        name: the schema's full name, e.g. ``io.durafka.HistoryEvent``.
        resolved: the current schema, resolved (see :func:`resolved_schema`).

    Attributes:
        name: the schema's full name.
        schema: the parsed current schema (the reader schema).
        fingerprint: the current schema's standard fingerprint (written in every record).
    """

    def __init__(self, name: str, resolved: dict[str, Any]) -> None:
        self.name = name
        self.schema = cast("dict[str, Any]", parse_schema(resolved, named_schemas={}))
        self.fingerprint = fingerprint(resolved)
        self._header = _HEADER.pack(MARKER, self.fingerprint)
        # Older writer schemas of the same record, by fingerprint (schema evolution).
        self.writers: dict[int, dict[str, Any]] = {self.fingerprint: self.schema}

    def add_writer_schema(self, resolved: dict[str, Any], legacy: int | None = None) -> None:
        """Accept data written with an older (compatible) version of this schema.

        Args:
            resolved: that version's schema, resolved.
            legacy: the durafka 0.1 fingerprint its records may carry instead.
        """
        parsed = cast("dict[str, Any]", parse_schema(resolved, named_schemas={}))
        # Same fingerprint as the current schema: keep the current one, which reads
        # without schema resolution (several times faster).
        self.writers.setdefault(fingerprint(resolved), parsed)
        if legacy is not None:
            self.writers.setdefault(legacy, parsed)

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
            raise UnknownSchemaError(
                f"unknown schema fingerprint {fp:016x} for {self.name}: written by a newer "
                "durafka release (upgrade this process) or by a foreign producer",
                schema=self.name,
                fingerprint=fp,
            )
        try:
            buf = io.BytesIO(data)
            buf.seek(10)
            reader = None if writer is self.schema else self.schema
            return cast("dict[str, Any]", schemaless_reader(buf, writer, reader))
        except Exception as exc:
            raise DecodeError(f"corrupt Avro body for {self.name}: {exc}") from exc


def parse_schema_set(directory: Path) -> dict[str, dict[str, Any]]:
    """The resolved schemas of one folder's ``.avsc`` files, by short name."""
    return {
        short: resolved_schema(short, directory)
        for short in SCHEMA_FILES
        if (directory / f"{short}.avsc").exists()
    }


def load_schemas(directory: Path | None = None) -> dict[str, SchemaCodec]:
    """Codecs of the current schemas, accepting data written with every released version.

    Released versions live in ``schemas/versions/<version>/``; a schema change adds
    a new version folder (``tests/codec/test_schema_evolution.py`` insists).
    """
    directory = directory or schema_dir()
    codecs = {
        short: SchemaCodec(f"{NAMESPACE}.{short}", resolved)
        for short, resolved in parse_schema_set(directory).items()
    }
    versions = directory / "versions"
    if versions.is_dir():
        for version_dir in sorted(p for p in versions.iterdir() if p.is_dir()):
            legacy = (
                legacy_fingerprints(version_dir)
                if version_dir.name in LEGACY_FINGERPRINT_VERSIONS
                else {}
            )
            for short, resolved in parse_schema_set(version_dir).items():
                codecs[short].add_writer_schema(resolved, legacy.get(short))
    return codecs


_CODECS: dict[str, SchemaCodec] | None = None


def codec(short_name: str) -> SchemaCodec:
    """The codec of one schema (parsed once per process)."""
    global _CODECS
    if _CODECS is None:
        _CODECS = load_schemas()
    return _CODECS[short_name]


def known_fingerprint(fp: int) -> bool:
    """Whether any schema of this release, current or older, has fingerprint ``fp``."""
    codec("OrchestrationMessage")  # parses the schemas once
    assert _CODECS is not None
    return any(fp in c.writers for c in _CODECS.values())


def bound(
    short_name: str,
) -> tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], dict[str, Any]]]:
    """``(encode, decode)`` of one schema, for hot paths that want no lookups."""
    c = codec(short_name)
    return c.encode, c.decode


def write_standalone(directory: Path | None = None) -> list[Path]:
    """Write ``<schemas>/standalone/<Record>.avsc``: each record's resolved schema."""
    directory = directory or schema_dir()
    out = directory / "standalone"
    out.mkdir(exist_ok=True)
    written = []
    for short in SCHEMA_FILES:
        path = out / f"{short}.avsc"
        path.write_text(json.dumps(resolved_schema(short, directory), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m durafka.codec.avro: refresh schemas/standalone/
    for written_path in write_standalone():
        print(written_path)
