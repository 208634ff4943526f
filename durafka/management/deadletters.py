"""Reading ``H.dead-letters``: the newest dead letters a page at a time, or one by its id.

``H.dead-letters`` is a delete-retention topic that may hold many records; a
page reads only the last ``limit`` records of each partition before the page's
cursor (a per-partition end offset), newest first, merged across partitions by
the time they failed. The continuation token holds the next cursor, so paging
back through a month of dead letters never reads a record twice.

A dead letter's id is ``<partition>:<offset>`` on ``H.dead-letters``. A record
with a ``null`` value and a ``durafka-redrive-of`` header is a receipt of a
redrive (:mod:`.redrive`), not a dead letter: pages leave receipts out, and
:func:`redriven` looks for the receipt of one dead letter.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import time
from collections.abc import Mapping
from typing import Any

from durafka.codec.records import decode_dead_letter
from durafka.errors import WaitTimeoutError
from durafka.management.models import DeadLetterInfo, DeadLetterPage, iso
from durafka.topology import HubTopics
from durafka.transport.base import Consumer, Record, TopicPartition, Transport, header_pairs

__all__ = [
    "REDRIVE_OF_HEADER",
    "dead_letter_fields",
    "not_redrivable",
    "parse_dead_letter_id",
    "read_dead_letter",
    "read_dead_letters",
    "redriven",
]

#: The header of a redrive's receipt: ``<partition>:<offset>`` of the dead letter.
REDRIVE_OF_HEADER = "durafka-redrive-of"

#: Seconds a read of dead letters may take at most.
READ_TIMEOUT = 30.0
_POLL_TIMEOUT = 0.2


def read_dead_letters(
    transport: Transport,
    topics: HubTopics,
    *,
    limit: int = 50,
    continuation: str | None = None,
    timeout: float = READ_TIMEOUT,
) -> DeadLetterPage:
    """The newest ``limit`` dead letters before the cursor, newest first.

    Args:
        transport: the task hub's transport.
        topics: the task hub's names.
        limit: dead letters per page at most.
        continuation: the ``continuation`` of the previous page (None: the newest).
        timeout: seconds the read may take.

    Raises:
        ValueError: ``limit`` below 1, or a continuation token no page returned.
        WaitTimeoutError: the partitions could not be read in time.
        TransportError: ``H.dead-letters`` does not exist, or the broker failed.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    cursor = _decode_cursor(continuation) if continuation is not None else {}
    topic = topics.dead_letters
    consumer = transport.consumer(None)
    try:
        parts = [TopicPartition(topic, p) for p in range(transport.partition_count(topic))]
        lows: dict[TopicPartition, int] = {}
        ends: dict[TopicPartition, int] = {}
        for tp in parts:
            low, high = consumer.watermarks(tp)
            lows[tp] = low
            ends[tp] = max(low, min(high, cursor.get(tp.partition, high)))
        ranges = {tp: (max(lows[tp], ends[tp] - limit), ends[tp]) for tp in parts}
        records = _read(consumer, ranges, timeout)
    finally:
        consumer.close()
    newest_first = [
        sorted((r for r in rs if r[0].value() is not None), key=_offset, reverse=True)
        for rs in records.values()
    ]
    merged = heapq.merge(*newest_first, key=lambda r: r[1]["failed_at"], reverse=True)
    chosen: list[tuple[Record, dict[str, Any]]] = []
    for item in merged:
        chosen.append(item)
        if len(chosen) == limit:
            break
    next_ends = dict(ends)
    for record, _ in chosen:
        tp = TopicPartition(topic, record.partition() or 0)
        next_ends[tp] = min(next_ends[tp], _offset((record, {})))
    page = [_info(record, letter, topics) for record, letter in chosen]
    more = any(next_ends[tp] > lows[tp] for tp in parts)
    return DeadLetterPage(items=page, continuation=_encode_cursor(next_ends) if more else None)


def read_dead_letter(
    transport: Transport,
    topics: HubTopics,
    partition: int,
    offset: int,
    *,
    timeout: float = READ_TIMEOUT,
) -> DeadLetterInfo | None:
    """The dead letter at ``partition``/``offset`` of ``H.dead-letters`` (None: no such record).

    Raises:
        WaitTimeoutError: the partition could not be read in time.
        TransportError: ``H.dead-letters`` does not exist, or the broker failed.
    """
    found = _one(transport, topics, partition, offset, timeout)
    return None if found is None else _info(*found, topics)


def dead_letter_fields(
    transport: Transport,
    topics: HubTopics,
    partition: int,
    offset: int,
    *,
    timeout: float = READ_TIMEOUT,
) -> dict[str, Any] | None:
    """The fields of the dead letter at ``partition``/``offset`` as stored (bytes as bytes).

    None when there is no dead letter there (nothing, or a receipt).
    """
    found = _one(transport, topics, partition, offset, timeout)
    return None if found is None else found[1]


def redriven(
    transport: Transport,
    topics: HubTopics,
    partition: int,
    offset: int,
    *,
    timeout: float = READ_TIMEOUT,
) -> bool:
    """Whether a receipt says the dead letter at ``partition``/``offset`` was redriven.

    A receipt is written after its dead letter, to the same partition: the rest of
    the partition is read.
    """
    tp = TopicPartition(topics.dead_letters, partition)
    wanted = f"{partition}:{offset}".encode()
    consumer = transport.consumer(None)
    try:
        high = consumer.watermarks(tp)[1]
        records = _read(consumer, {tp: (offset + 1, high)}, timeout)
    finally:
        consumer.close()
    return any(
        record.value() is None and (REDRIVE_OF_HEADER, wanted) in header_pairs(record.headers())
        for record, _ in records[tp]
    )


def not_redrivable(letter: Mapping[str, Any], topics: HubTopics) -> str | None:
    """Why the dead letter ``letter`` (its fields) cannot be redriven; None: it can."""
    if letter.get("source_topic") not in (topics.orchestrations, topics.activities):
        return (
            f"its source {letter.get('source_topic')!r} is not an input topic (a stored value "
            "is kept for people, not for processors)"
        )
    if letter.get("key") is None or letter.get("value") is None:
        return "it has no key or no value"
    cut = [c for c in letter.get("truncated", []) if c != "reason"]
    if cut:
        return f"its {', '.join(cut)} was cut to fit the dead letter"
    return None


def _one(
    transport: Transport, topics: HubTopics, partition: int, offset: int, timeout: float
) -> tuple[Record, dict[str, Any]] | None:
    topic = topics.dead_letters
    if not 0 <= partition < transport.partition_count(topic) or offset < 0:
        return None
    tp = TopicPartition(topic, partition)
    consumer = transport.consumer(None)
    try:
        low, high = consumer.watermarks(tp)
        if not low <= offset < high:
            return None
        records = _read(consumer, {tp: (offset, offset + 1)}, timeout)
    finally:
        consumer.close()
    found = [(r, d) for r, d in records[tp] if r.offset() == offset and r.value() is not None]
    return found[0] if found else None


def parse_dead_letter_id(text: str) -> tuple[int, int]:
    """``"<partition>:<offset>"`` as numbers.

    Raises:
        ValueError: ``text`` is not two non-negative integers around a colon.
    """
    partition, sep, offset = text.partition(":")
    if sep and partition.isdigit() and offset.isdigit():
        return int(partition), int(offset)
    raise ValueError(f"a dead letter id is <partition>:<offset>, e.g. 0:42; got {text!r}")


def _read(
    consumer: Consumer,
    ranges: Mapping[TopicPartition, tuple[int, int]],
    timeout: float,
) -> dict[TopicPartition, list[tuple[Record, dict[str, Any]]]]:
    """The decoded records of each ``[start, end)`` range (read_committed)."""
    found: dict[TopicPartition, list[tuple[Record, dict[str, Any]]]] = {tp: [] for tp in ranges}
    wanted = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
    if not wanted:
        return found
    consumer.assign({tp: start for tp, (start, _) in wanted.items()})
    deadline = time.monotonic() + timeout
    # Done when every position reaches its end: transaction markers take offsets
    # and are never returned as records.
    while any(consumer.position(tp) < end for tp, (_, end) in wanted.items()):
        for record in consumer.poll_batch(500, _POLL_TIMEOUT):
            tp = TopicPartition(record.topic() or "", record.partition() or 0)
            offset = record.offset()
            if tp in wanted and offset is not None and offset < wanted[tp][1]:
                found[tp].append((record, _decode(record)))
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"reading dead letters of {sorted(wanted)} did not finish within {timeout}s"
            )
    return found


def _decode(record: Record) -> dict[str, Any]:
    value = record.value()
    if value is None:  # a redrive's receipt: no fields
        return {}
    try:
        return decode_dead_letter(value or b"")
    except Exception as exc:  # another writer's garbage: shown, not fatal
        return {
            "reason": f"(not a durafka dead letter: {exc})",
            "failed_at": record.timestamp()[1],
            "source_topic": "",
            "source_partition": -1,
            "source_offset": -1,
            "value": value,
        }


def _offset(item: tuple[Record, dict[str, Any]]) -> int:
    offset = item[0].offset()
    return -1 if offset is None else offset


def _text(data: bytes | None) -> tuple[str | None, str | None]:
    """Bytes as text when they are UTF-8, else as base64 (second element)."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(data).decode("ascii")


def _info(record: Record, letter: dict[str, Any], topics: HubTopics) -> DeadLetterInfo:
    partition = record.partition() or 0
    offset = _offset((record, letter))
    value, value_base64 = _text(letter.get("value"))
    key, key_base64 = _text(letter.get("key"))
    if key_base64 is not None:
        key = f"base64:{key_base64}"
    headers = {
        h["key"]: (_text(h.get("value"))[0] or _text(h.get("value"))[1])
        for h in letter.get("headers", [])
    }
    sha = letter.get("value_sha256")
    return DeadLetterInfo(
        id=f"{partition}:{offset}",
        partition=partition,
        offset=offset,
        reason=letter.get("reason", ""),
        failed_at=iso(letter.get("failed_at")) or "",
        failed_at_ms=letter.get("failed_at", 0),
        source_topic=letter.get("source_topic", ""),
        source_partition=letter.get("source_partition", -1),
        source_offset=letter.get("source_offset", -1),
        source_timestamp=iso(letter.get("source_timestamp")),
        key=key,
        value=value,
        value_base64=value_base64,
        headers=headers,
        key_size=letter.get("key_size"),
        value_size=letter.get("value_size"),
        value_sha256=sha.hex() if isinstance(sha, bytes) else None,
        truncated=list(letter.get("truncated", [])),
        durafka_version=letter.get("durafka_version") or None,
        written_by=letter.get("written_by") or None,
        not_redrivable=not_redrivable(letter, topics),
    )


def _encode_cursor(ends: Mapping[TopicPartition, int]) -> str:
    raw = ",".join(f"{tp.partition}:{end}" for tp, end in sorted(ends.items()))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _decode_cursor(token: str) -> dict[int, int]:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
        return {int(p): int(e) for p, _, e in (item.partition(":") for item in raw.split(","))}
    except (ValueError, UnicodeError, binascii.Error):
        raise ValueError(
            f"invalid continuation token {token!r}: pass the value of a previous page's "
            "continuation"
        ) from None
