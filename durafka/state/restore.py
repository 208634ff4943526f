"""Restore a partition store from its changelog partition.

The restore consumer is separate from the processor's group consumer (as in Kafka
Streams): it is created with ``group_id=None`` and ``assign()``ed to the one
changelog partition by hand, so restoring never joins, rebalances or commits in
the consumer group. It reads committed records only; aborted records are never
returned, yet they and the transaction markers take offsets. That is why restore
ends when the consumer *position* reaches the high watermark captured at the
start, never when "last record offset + 1" does (under exactly-once the last
offset before the high watermark is usually a commit marker).

Each poll batch becomes one atomic store write together with the position after
the batch, so an interrupted restore resumes where it stopped, and re-applying
records is idempotent (the last write of a key wins).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from durafka.errors import StoreError, WaitTimeoutError
from durafka.state.base import PartitionStore
from durafka.transport.base import Consumer, Record, TopicPartition

__all__ = ["restore_partition"]

logger = logging.getLogger(__name__)

_LOG_INTERVAL = 1.0


def restore_partition(
    store: PartitionStore,
    consumer: Consumer,
    changelog: TopicPartition,
    *,
    progress: Callable[[int, int], None] | None = None,
    poll_timeout: float = 0.5,
    deadline: float | None = None,
    max_records: int = 10_000,
    reject: Callable[[Record], bool] | None = None,
) -> int:
    """Bring ``store`` up to date with the ``changelog`` partition.

    Reads from the store's checkpoint (or the beginning of the partition) up to the
    high watermark read at the start, then leaves the consumer unassigned.

    Args:
        store: the partition store; its checkpoint advances with every batch.
        consumer: a dedicated restore consumer (``transport.consumer(group_id=None)``),
            with nothing assigned; never the group consumer.
        changelog: the changelog partition holding this store's state.
        progress: called after each batch as ``progress(done, total)``, in offsets
            (``done`` of ``total`` offsets between the start and the high watermark).
        poll_timeout: seconds each poll waits for records.
        deadline: a :func:`time.monotonic` time after which restore gives up
            (None: no limit).
        max_records: records per poll batch, i.e. per store write.
        reject: called with each record that has a value; when it returns True the
            record is left out (its key deleted from the store instead), e.g. a
            key the processor could not parse. It is the caller's to report it.

    Returns:
        The number of changelog records applied (tombstones included, rejected
        records not).

    Raises:
        StoreError: the stored checkpoint lies beyond the changelog's high watermark
            (the state belongs to another changelog, e.g. a deleted and recreated
            topic), or the store write failed.
        WaitTimeoutError: ``deadline`` passed before the high watermark was reached.
    """
    low, high = consumer.watermarks(changelog)
    stored = store.changelog_offset()
    if stored is not None and stored > high:
        raise StoreError(
            f"the state store checkpoint of {changelog} is offset {stored}, beyond the "
            f"changelog's high watermark {high}: the local state does not come from this "
            f"changelog (was the topic deleted and recreated?). Stop the processor, delete "
            f"this partition's state directory and start again to rebuild it from the changelog."
        )
    if stored is not None and stored < low:
        logger.warning(
            "%s: checkpoint %d is below the changelog's low watermark %d (records were "
            "deleted); restoring from %d",
            changelog,
            stored,
            low,
            low,
        )
    start = low if stored is None else max(stored, low)
    total = high - start
    if total <= 0:
        logger.debug("%s: state up to date at offset %d", changelog, high)
        return 0

    logger.info("%s: restoring offsets %d to %d (%d offsets)", changelog, start, high, total)
    began = last_log = time.monotonic()
    applied = 0
    checkpoint = stored
    consumer.assign({changelog: start})
    try:
        position = start
        while position < high:
            records = consumer.poll_batch(max_records, poll_timeout)
            position = consumer.position(changelog)
            if records:
                changes: dict[bytes, bytes | None] = {}
                for record in records:
                    key = record.key()
                    if key is None:
                        logger.warning(
                            "%s: skipping changelog record without a key at offset %s",
                            changelog,
                            record.offset(),
                        )
                        continue
                    value = record.value()
                    if value is not None and reject is not None and reject(record):
                        # Also gone from a store that an older restore wrote it into.
                        changes[key] = None
                        continue
                    changes[key] = value
                    applied += 1
                # One atomic write per poll: data and the position reached together.
                store.write(changes, position)
                checkpoint = position
            if progress is not None:
                # Before the first fetch the position may still be unknown (negative).
                progress(min(max(position, start), high) - start, total)
            now = time.monotonic()
            if now - last_log >= _LOG_INTERVAL:
                last_log = now
                logger.info(
                    "%s: restored to offset %d of %d (%d records, %.0f records/s)",
                    changelog,
                    position,
                    high,
                    applied,
                    applied / (now - began),
                )
            if position < high and deadline is not None and now >= deadline:
                resume = start if checkpoint is None else checkpoint
                raise WaitTimeoutError(
                    f"restoring {changelog} did not finish in time: at offset {position} "
                    f"of {high} after {now - began:.1f}s ({applied} records applied); the "
                    f"next attempt resumes from offset {resume}"
                )
        if checkpoint != position:
            # The tail was only markers or aborted records: checkpoint past them too.
            store.write({}, position)
    finally:
        consumer.unassign()
    logger.info(
        "%s: restore finished at offset %d: %d records in %.2fs",
        changelog,
        position,
        applied,
        time.monotonic() - began,
    )
    return applied
