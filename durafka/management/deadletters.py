"""Reading ``H.dead-letters``: the newest dead letters a page at a time, or one by its id.

``H.dead-letters`` is a delete-retention topic that may hold many records; a
page reads only the last ``limit`` records of each partition before the page's
cursor (a per-partition end offset), newest first, merged across partitions by
the time they failed. The continuation token holds the next cursor, so paging
back through a month of dead letters never reads a record twice.

A dead letter's id is ``<partition>:<offset>`` on ``H.dead-letters``.
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
from durafka.transport.base import Consumer, Record, TopicPartition, Transport

__all__ = ["parse_dead_letter_id", "read_dead_letter", "read_dead_letters"]

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
    newest_first = [sorted(rs, key=_offset, reverse=True) for rs in records.values()]
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
    page = [_info(record, letter) for record, letter in chosen]
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
    found = [(r, d) for r, d in records[tp] if r.offset() == offset]
    return _info(*found[0]) if found else None


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


def _info(record: Record, letter: dict[str, Any]) -> DeadLetterInfo:
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
