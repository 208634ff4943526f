"""Reading instances from the processor's changelog, one partition at a time.

The processors' stores are rebuilt from the compacted topic ``H.state-changelog``
(keys: :mod:`durafka.state.keys`), so that topic holds, per partition, the
header (``i/<id>``) and the history chunks (``h/<id>\\0<n>``) of every instance
the partition owns. This module reads them back without a processor:

* :func:`scan_partition` streams one changelog partition, read_committed, from
  its beginning to the high watermark taken when the scan starts;
* :func:`read_instances` keeps the latest value of each header and chunk key of
  one partition (optionally of one instance, optionally as of a time) and
  decodes them into :class:`StoredInstance` objects.

Memory: one partition's live state (its latest header and chunk values) at a
time, never the whole topic; callers that check every instance go partition by
partition (``durafka replay-check``). Cost: a full read of the partition.

Point in time: a value counts from the time its content carries (a header's
status update, a chunk's latest event), which is its batch's time; the
record's own timestamp is a moment later. History chunks are append-only
within a generation (each batch writes a new chunk key), so the history as of a
time is exact as long as the generation's chunks exist; older header values
(status, custom status) survive only until the log cleaner compacts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from durafka.codec.records import InstanceState, decode_chunk, decode_state
from durafka.errors import DecodeError, WaitTimeoutError
from durafka.runtime.history import HistoryEvent
from durafka.topology import HubTopics
from durafka.transport.base import Record, TopicPartition, Transport

__all__ = [
    "SCAN_TIMEOUT",
    "StoredInstance",
    "read_instances",
    "scan_partition",
]

#: Seconds one partition's scan may take before it gives up (a large partition, a slow broker).
SCAN_TIMEOUT = 600.0

_MAX_RECORDS = 10_000
_POLL_TIMEOUT = 0.2
_HEADER = b"i/"
_CHUNK = b"h/"


@dataclass(slots=True)
class StoredInstance:
    """An instance as its partition's changelog holds it.

    Attributes:
        instance_id: the instance.
        partition: its partition (of the changelog and of ``H.orchestrations``).
        state: its header (status, generation, ...); None when only history
            chunks were found (a header compacted away, or not yet written).
        history: the events of its current generation, oldest first.
        updated_at_ms: the timestamp of the latest record read for it.
        error: why its header or a history chunk could not be decoded (None: they could);
            what could be decoded is kept.
    """

    instance_id: str
    partition: int
    state: InstanceState | None
    history: list[HistoryEvent] = field(default_factory=list)
    updated_at_ms: int = 0
    error: str | None = None


def scan_partition(
    transport: Transport,
    partition: TopicPartition,
    *,
    timeout: float = SCAN_TIMEOUT,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[list[Record]]:
    """The records of ``partition``, in batches, up to the high watermark at the start.

    Reads with its own manually assigned consumer (no group, nothing committed).

    Args:
        transport: the task hub's transport.
        partition: the partition to read.
        timeout: seconds the scan may take at most.
        on_batch: called after each batch with ``(records read so far, offsets to read)``.

    Raises:
        WaitTimeoutError: the scan did not reach the high watermark in time.
        TransportError: the topic is missing or the broker failed.
    """
    consumer = transport.consumer(None)
    try:
        low, high = consumer.watermarks(partition)
        if high <= low:
            return
        consumer.assign({partition: low})
        deadline = time.monotonic() + timeout
        read = 0
        # Done when the *position* reaches the high watermark: under exactly-once the
        # last offsets are transaction markers, which are never returned as records.
        while consumer.position(partition) < high:
            batch = consumer.poll_batch(_MAX_RECORDS, _POLL_TIMEOUT)
            if batch:
                read += len(batch)
                yield batch
                if on_batch is not None:
                    on_batch(read, high - low)
            if time.monotonic() > deadline:
                raise WaitTimeoutError(
                    f"reading {partition} did not reach offset {high} within {timeout}s "
                    f"(at {consumer.position(partition)})"
                )
    finally:
        consumer.close()


def changelog_partition(topics: HubTopics, number: int) -> TopicPartition:
    """Partition ``number`` of the task hub's changelog."""
    return TopicPartition(topics.changelog, number)


def read_instances(
    transport: Transport,
    topics: HubTopics,
    partition: int,
    *,
    instance_id: str | None = None,
    at_ms: int | None = None,
    keep: Callable[[InstanceState], bool] | None = None,
    timeout: float = SCAN_TIMEOUT,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[StoredInstance]:
    """The orchestration instances of one changelog partition, with their histories.

    Args:
        transport: the task hub's transport.
        topics: the task hub's topics.
        partition: the partition number.
        instance_id: only this instance.
        at_ms: as of this time: each key's last value written by then (by the
            time its content carries); meant for one instance.
        keep: decode the history only of instances whose header it accepts (the
            others are left out).
        timeout: seconds the scan may take at most.
        on_batch: progress, see :func:`scan_partition`.

    Returns:
        The instances in id order; an instance whose keys were all deleted (purged)
        is left out.
    """
    # Imported here: the package ``durafka.processor`` loads the whole processor, which
    # a client process has no use for (see durafka.client.history).
    from durafka.state.keys import history_prefix, instance_key

    exact: tuple[bytes, bytes] | None = None
    if instance_id is not None:
        exact = (instance_key(instance_id), history_prefix(instance_id))
    # Raw latest values only: decoding waits until the partition is read, and a key
    # overwritten a thousand times is decoded once.
    values: dict[bytes, tuple[bytes | None, int]] = {}
    # With at_ms, every version of each key: which one was current then is decided
    # by its content's time (one instance's keys: few).
    every: dict[bytes, list[tuple[bytes | None, int]]] = {}
    for batch in scan_partition(
        transport, changelog_partition(topics, partition), timeout=timeout, on_batch=on_batch
    ):
        for record in batch:
            key = record.key()
            if key is None:
                continue
            if exact is not None:
                if key != exact[0] and not key.startswith(exact[1]):
                    continue
            elif not (key.startswith(_HEADER) or key.startswith(_CHUNK)):
                continue
            stamp = record.timestamp()[1]
            if at_ms is None:
                values[key] = (record.value(), stamp)
            else:
                every.setdefault(key, []).append((record.value(), stamp))
    if at_ms is not None:
        values = _as_of(every, at_ms)
    return _decode(values, partition, keep)


def _as_of(
    every: dict[bytes, list[tuple[bytes | None, int]]], at_ms: int
) -> dict[bytes, tuple[bytes | None, int]]:
    """Each key's last value whose content is from ``at_ms`` or before.

    A record is produced a moment after the batch that wrote it, so its own
    timestamp is later than the times its content carries (the status's last
    update, the history events'), which are what an operator asks about.
    """
    chosen: dict[bytes, tuple[bytes | None, int]] = {}
    for key, versions in every.items():
        for value, stamp in reversed(versions):
            if _content_time(key, value, stamp) <= at_ms:
                chosen[key] = (value, stamp)
                break
    return chosen


def _content_time(key: bytes, value: bytes | None, stamp: int) -> int:
    if value is None:
        return stamp  # a tombstone: deleted when it was produced
    try:
        if key.startswith(_HEADER):
            return decode_state(value).status.last_updated_at_ms
        return max((e.timestamp for e in decode_chunk(value)), default=stamp)
    except DecodeError:
        return stamp


def _decode(
    values: dict[bytes, tuple[bytes | None, int]],
    partition: int,
    keep: Callable[[InstanceState], bool] | None,
) -> list[StoredInstance]:
    found: dict[str, StoredInstance] = {}
    chunks: dict[str, list[tuple[bytes, bytes]]] = {}
    for key, (value, stamp) in values.items():
        if value is None:
            continue
        iid_bytes, _, rest = key[2:].partition(b"\x00")
        iid = iid_bytes.decode(errors="replace")
        if key.startswith(_HEADER):
            try:
                state = decode_state(value)
            except DecodeError as exc:
                found[iid] = StoredInstance(
                    iid, partition, None, updated_at_ms=stamp, error=str(exc)
                )
                continue
            if keep is not None and not keep(state):
                found[iid] = StoredInstance(iid, partition, None, updated_at_ms=-1)
                continue
            inst = found.get(iid)
            if inst is None:
                found[iid] = StoredInstance(iid, partition, state, updated_at_ms=stamp)
            elif inst.updated_at_ms >= 0:
                inst.state = state
                inst.updated_at_ms = max(inst.updated_at_ms, stamp)
        else:
            chunks.setdefault(iid, []).append((rest, value))
            inst = found.get(iid)
            if inst is None:
                found[iid] = StoredInstance(iid, partition, None, updated_at_ms=stamp)
            elif inst.updated_at_ms >= 0:
                inst.updated_at_ms = max(inst.updated_at_ms, stamp)
    out: list[StoredInstance] = []
    for iid in sorted(found):
        inst = found[iid]
        if inst.updated_at_ms < 0:  # not kept
            continue
        # Chunk numbers are zero-padded in the key, so key order is chunk order.
        for _, value in sorted(chunks.get(iid, ())):
            try:
                inst.history.extend(decode_chunk(value))
            except DecodeError as exc:
                inst.error = inst.error or str(exc)
        out.append(inst)
    return out
