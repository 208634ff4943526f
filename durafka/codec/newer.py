"""Telling a record of a newer durafka release apart from garbage.

A value that carries the single-object marker and a schema fingerprint this
release does not know is either written by a newer release (a rolling upgrade:
nothing may be lost, the reader must wait for its upgrade) or garbage that
happens to start with the marker (another service's bug: it must be
dead-lettered, or it would stall a partition forever). The fingerprint itself
cannot tell: a newer release's fingerprints are unknown by definition. What a
newer release keeps is the beginning of each record: schemas only evolve by
adding fields with defaults *after* the first ones, and the first fields of the
records below never change (``tests/codec/test_schema_evolution.py`` checks it
for every released version). So a value is taken for a newer release's when,
after the marker and an unknown fingerprint, its body starts as that record
always starts:

* ``OrchestrationMessage``, ``ActivityTask`` (``instance_id`` first) and
  ``InstanceState`` (``status.instance_id`` first): the Avro string of the id the
  record's key names (the record key, or the id inside the store key);
* ``EntityState`` (``name``, ``key``): the entity id's name and key;
* ``HistoryChunk`` (an array of ``HistoryEvent``, ``kind`` and ``timestamp``
  first): a block of at least one event whose kind number is below 128 and whose
  timestamp lies in 2000-2200 (the chunk has no id to compare).

A fingerprint of another record type this release knows (an ``ActivityTask``
produced to ``H.orchestrations``) is no newer release's either. Garbage passes
this only if it copies the key into the right place (or, for a chunk, a
plausible event start); everything else with an unknown fingerprint is
dead-lettered like any undecodable value.
"""

from __future__ import annotations

from typing import Final

from durafka.codec.avro import MARKER, known_fingerprint

__all__ = ["avro_long", "avro_string", "written_by_newer_release"]

_BODY: Final = 10  # marker (2) + fingerprint (8)
_MIN_TIMESTAMP_MS: Final = 946_684_800_000  # 2000-01-01
_MAX_TIMESTAMP_MS: Final = 7_258_118_400_000  # 2200-01-01
_MAX_KIND: Final = 128


def avro_long(n: int) -> bytes:
    """Avro's encoding of an ``int`` or ``long`` ``n`` (a zigzag varint)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _read_long(data: bytes, pos: int) -> tuple[int, int] | None:
    """The Avro ``long`` at ``pos`` and the position after it (None: cut or too long)."""
    shift = 0
    z = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
    return None


def avro_string(text: str) -> bytes:
    """The Avro encoding of a string: its UTF-8 length as a ``long``, then the bytes."""
    raw = text.encode("utf-8", "surrogatepass")
    return avro_long(len(raw)) + raw


def _chunk_start_is_plausible(data: bytes) -> bool:
    count = _read_long(data, _BODY)
    if count is None or count[0] == 0:
        return False
    n, pos = count
    if n < 0:  # a block with its byte size: -count, then the size
        size = _read_long(data, pos)
        if size is None:
            return False
        pos = size[1]
    kind = _read_long(data, pos)
    if kind is None or not 0 <= kind[0] < _MAX_KIND:
        return False
    timestamp = _read_long(data, kind[1])
    return timestamp is not None and _MIN_TIMESTAMP_MS <= timestamp[0] < _MAX_TIMESTAMP_MS


def written_by_newer_release(data: bytes, schema: str, record_id: str | None) -> bool:
    """Whether ``data`` (which has an unknown fingerprint) is a newer release's record.

    Args:
        data: the value, starting with the marker and the unknown fingerprint.
        schema: the record type expected, short (``OrchestrationMessage``) or full
            (``io.durafka.OrchestrationMessage``) name.
        record_id: the instance or entity id the record's key names (None: unknown,
            which makes records with an id count as garbage).

    Returns:
        True when the body starts as every release writes that record (module
        docstring); False for garbage and for record types not listed there.
    """
    if len(data) <= _BODY or data[:2] != MARKER:
        return False
    if known_fingerprint(int.from_bytes(data[2:_BODY], "little")):
        return False  # another record type of this release: misplaced, not newer
    short = schema.rsplit(".", 1)[-1]
    if short == "HistoryChunk":
        return _chunk_start_is_plausible(data)
    if record_id is None:
        return False
    if short in ("OrchestrationMessage", "ActivityTask", "InstanceState"):
        prefix = avro_string(record_id)
    elif short == "EntityState":
        name, sep, key = record_id.removeprefix("@").partition("@")
        if not sep:
            return False
        prefix = avro_string(name) + avro_string(key)
    else:
        return False
    return data.startswith(prefix, _BODY)
