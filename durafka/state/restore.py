"""Restore partition stores from their changelog partitions, a bounded slice at a time.

The restore consumer is separate from the processor's group consumer (as in Kafka
Streams): it is created with ``group_id=None`` and ``assign()``ed to changelog
partitions by hand, so restoring never joins, rebalances or commits in the
consumer group. It reads committed records only; aborted records are never
returned, yet they and the transaction markers take offsets. That is why a
restore ends when the consumer *position* reaches the high watermark captured at
its start, never when "last record offset + 1" does (under exactly-once the last
offset before the high watermark is usually a commit marker).

**A slice at a time.** :meth:`Restorer.step` reads one poll batch (at most
``max_records`` records, over every partition being restored) and writes each
partition's records to its store in one atomic write together with the position
reached, so an interrupted restore resumes where it stopped and re-applying
records is idempotent (the last write of a key wins). The processor calls it
between the polls of its group consumer: however long a restore is, the group
member keeps polling (``max.poll.interval.ms``) and keeps processing the
partitions that are ready. (Kafka Streams' state updater restores on a thread of
its own instead; in Python a thread would not restore faster — the GIL — and
interleaving keeps one owner for every store, so a revocation simply drops the
partition from the next step.)

**Stale stores.** Compaction keeps a tombstone only ``delete.retention.ms`` (the
changelog's) after it was cleaned; a store that has not read the changelog for
longer may have missed deletions that are gone from it, and restoring from its
checkpoint would bring deleted instances, entities and fired timers back. So a
store is wiped and restored in full (:func:`stale_reason`) when its checkpoint is
below the changelog's low watermark, or when records follow its checkpoint and
the checkpoint's time (see :mod:`durafka.state.base`) is older than the
retention less a margin: half the retention, at most an hour (clock skew between
hosts, and a restore's own duration — the check repeats at every step, so a
restore that runs past the horizon starts again from scratch). The checkpoint
time is a lower bound of when any record the store has not read was written:

* a batch the processor commits writes the time of its store write;
* a restore in progress keeps the time the store had (or, for an empty store,
  the time the restore began): the records ahead of its position are older than
  the position it reached, and the values it already read were in the changelog
  when read, so their tombstones cannot have been removed before that time plus
  the retention;
* a finished restore writes the time it read the high watermark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from durafka.errors import ConfigurationError, DurafkaError, StoreError, WaitTimeoutError
from durafka.state.base import PartitionStore
from durafka.topology import HubTopics, TopicSpec, load_hub_spec
from durafka.transport.base import Consumer, Record, TopicPartition, Transport

__all__ = [
    "KAFKA_DEFAULT_DELETE_RETENTION_MS",
    "Restored",
    "Restorer",
    "TombstoneRetention",
    "restore_partition",
    "stale_reason",
    "trusted_checkpoint_age",
]

logger = logging.getLogger(__name__)

_LOG_INTERVAL = 1.0
#: The margin kept below ``delete.retention.ms`` at most (see the module docstring).
MAX_RETENTION_MARGIN_S = 3600.0
#: Kafka's ``delete.retention.ms`` when a topic does not set it (one day).
KAFKA_DEFAULT_DELETE_RETENTION_MS = 86_400_000


def trusted_checkpoint_age(retention_ms: int) -> float:
    """How old (seconds) a checkpoint may be before its store counts as stale.

    The changelog's ``delete.retention.ms`` less a margin: half of it, at most an hour.
    """
    retention = retention_ms / 1000
    return retention - min(retention / 2, MAX_RETENTION_MARGIN_S)


def stale_reason(
    offset: int | None,
    taken_at: float | None,
    low: int,
    high: int,
    now: float,
    retention_ms: int | None,
) -> str | None:
    """Why a store with checkpoint ``offset`` (taken at ``taken_at``) must be wiped, or None.

    Args:
        offset: the store's checkpoint (None: an empty store, nothing to wipe).
        taken_at: the checkpoint's time (None: a store written before checkpoints had one).
        low: the changelog partition's low watermark.
        high: its high watermark.
        now: the current time (seconds since the epoch).
        retention_ms: the changelog's ``delete.retention.ms`` (None: not known, the
            time is not checked).
    """
    if offset is None:
        return None
    if offset < low:
        return (
            f"its checkpoint {offset} is below the changelog's low watermark {low}: records "
            "it never read were deleted"
        )
    if offset >= high or retention_ms is None:
        return None  # nothing follows the checkpoint: no deletion to miss
    if taken_at is None:
        return "its checkpoint has no time (written by an older durafka)"
    age = now - taken_at
    if age > trusted_checkpoint_age(retention_ms):
        return (
            f"its checkpoint is {age:.0f}s old and the changelog keeps tombstones for "
            f"{retention_ms / 1000:g}s (delete.retention.ms): deletions since then may be gone"
        )
    return None


class TombstoneRetention:
    """The changelog's ``delete.retention.ms``, as the broker reports it.

    Asked from the broker (``Transport.describe_topics``: describe configs) at most
    every ``refresh`` seconds; when the broker cannot tell (no permission to
    describe configs, unreachable, no such topic), the spec's value is used.

    Args:
        transport: the transport of the changelog's cluster.
        topic: the changelog topic.
        fallback_ms: the value when the broker cannot tell (the topology spec's,
            else Kafka's default, :data:`KAFKA_DEFAULT_DELETE_RETENTION_MS`).
        refresh: seconds a value read from the broker is used before asking again.
    """

    def __init__(
        self, transport: Transport, topic: str, fallback_ms: int, refresh: float = 300.0
    ) -> None:
        self._transport = transport
        self._topic = topic
        self._fallback_ms = fallback_ms
        self._refresh = refresh
        self._value: int | None = None
        self._next_read = 0.0
        self._warned = False

    @classmethod
    def of_hub(
        cls, transport: Transport, hub: str, spec_path: Path | None = None
    ) -> TombstoneRetention:
        """The retention of task hub ``hub``'s changelog; the fallback is the topology
        spec's value (``spec_path``, default ``topology/default.toml``), else Kafka's
        default."""
        changelog = HubTopics(hub).changelog
        try:
            specs = load_hub_spec(hub, spec_path)
        except ConfigurationError:
            specs = []
        value = next(
            (s.config.get("delete.retention.ms") for s in specs if s.name == changelog), None
        )
        fallback = int(value) if value is not None and value.isdigit() else None
        if fallback is None:
            fallback = KAFKA_DEFAULT_DELETE_RETENTION_MS
        return cls(transport, changelog, fallback)

    def __call__(self) -> int:
        now = time.monotonic()
        if self._value is not None and now < self._next_read:
            return self._value
        self._next_read = now + self._refresh
        try:
            asked = TopicSpec(self._topic, 1, config={"delete.retention.ms": ""})
            found = self._transport.describe_topics([asked]).get(self._topic)
            raw = found.config.get("delete.retention.ms") if found is not None else None
            value = int(raw) if raw is not None else self._fallback_ms
        except (DurafkaError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "cannot read delete.retention.ms of %s from the broker (%s); using %d ms",
                    self._topic,
                    exc,
                    self._fallback_ms,
                )
            value = self._fallback_ms
        self._value = value
        return value


@dataclass(frozen=True, slots=True)
class Restored:
    """A partition whose store is up to date with its changelog.

    Attributes:
        partition: the partition number.
        store: its store (open; the caller owns it now).
        applied: changelog records written to the store (tombstones included).
        seconds: how long the restore took.
        wiped: why the store was wiped and restored in full (None: it was not).
    """

    partition: int
    store: PartitionStore
    applied: int
    seconds: float
    wiped: str | None


class _Restoration:
    """One partition's restore: from its start to the high watermark captured at the start."""

    def __init__(
        self,
        tp: TopicPartition,
        store: PartitionStore,
        reject: Callable[[Record], bool] | None,
    ) -> None:
        self.tp = tp
        self.store = store
        self.reject = reject
        self.start = 0
        self.high = 0
        self.position = 0
        #: The checkpoint time of writes before the end (see the module docstring).
        self.since = 0.0
        #: When the high watermark was read: the checkpoint time of the last write.
        self.captured = 0.0
        self.written: int | None = None
        self.applied = 0
        self.began = self.last_log = time.monotonic()
        self.wiped: str | None = None

    def begin(self, consumer: Consumer, now: float, retention_ms: int | None) -> None:
        """Read the watermarks and the checkpoint; wipe a stale store."""
        tp, store = self.tp, self.store
        low, high = consumer.watermarks(tp)
        stored = store.changelog_offset()
        if stored is not None and stored > high:
            raise StoreError(
                f"the state store checkpoint of {tp} is offset {stored}, beyond the "
                f"changelog's high watermark {high}: the local state does not come from this "
                f"changelog (was the topic deleted and recreated?). Stop the processor, delete "
                f"this partition's state directory and start again to rebuild it from the "
                f"changelog."
            )
        taken_at = store.checkpoint_time()
        reason = stale_reason(stored, taken_at, low, high, now, retention_ms)
        if reason is not None:
            logger.warning("%s: wiping the local store and restoring it in full: %s", tp, reason)
            store.clear()
            self.wiped = reason
            stored = taken_at = None
        if stored is None:
            self.start, self.since = low, now
        else:
            self.start, self.since = stored, 0.0 if taken_at is None else taken_at
        self.high = high
        self.position = self.start
        self.captured = now
        self.written = None
        self.applied = 0
        if self.start < high:
            logger.info(
                "%s: restoring offsets %d to %d (%d offsets)",
                tp,
                self.start,
                high,
                high - self.start,
            )

    @property
    def done(self) -> bool:
        return self.position >= self.high

    def is_stale(self, now: float, retention_ms: int | None) -> bool:
        """Whether the restore has run past the age its checkpoint time allows."""
        return (
            retention_ms is not None
            and not self.done
            and now - self.since > trusted_checkpoint_age(retention_ms)
        )

    def advance(self, records: list[Record], position: int) -> None:
        """Write one poll's records of this partition, with the position reached."""
        self.position = max(self.position, position)
        if not records:
            return
        changes: dict[bytes, bytes | None] = {}
        for record in records:
            key = record.key()
            if key is None:
                logger.warning(
                    "%s: skipping changelog record without a key at offset %s",
                    self.tp,
                    record.offset(),
                )
                continue
            value = record.value()
            if value is not None and self.reject is not None and self.reject(record):
                # Also gone from a store that an older restore wrote it into.
                changes[key] = None
                continue
            changes[key] = value
            self.applied += 1
        # One atomic write per poll: data and the position reached together.
        self.store.write(changes, self.position, checkpoint_time=self._time())
        self.written = self.position

    def finish(self) -> None:
        """Checkpoint the end (also past a tail of markers), with the end's time."""
        if self.written != self.position:
            self.store.write({}, self.position, checkpoint_time=self.captured)
            self.written = self.position

    def _time(self) -> float:
        return self.captured if self.done else self.since

    def progress(self) -> tuple[int, int]:
        """``(done, total)`` offsets between the start and the high watermark."""
        # Before the first fetch the position may still be unknown (negative).
        return min(max(self.position, self.start), self.high) - self.start, self.high - self.start

    def log_progress(self) -> None:
        now = time.monotonic()
        if now - self.last_log < _LOG_INTERVAL:
            return
        self.last_log = now
        logger.info(
            "%s: restored to offset %d of %d (%d records, %.0f records/s)",
            self.tp,
            self.position,
            self.high,
            self.applied,
            self.applied / max(now - self.began, 1e-9),
        )


class Restorer:
    """Restores the stores of partitions, a bounded slice per :meth:`step`.

    Args:
        consumer: makes the restore consumer (``transport.consumer(group_id=None)``)
            when first needed; never the group consumer.
        changelog_topic: ``H.state-changelog``; partition ``p`` holds store ``p``.
        open_store: opens the store of a partition when its restore begins.
        reject: the ``reject`` of a partition: called with each record that has a
            value; when it returns True the record is left out (its key deleted from
            the store instead), e.g. a key the processor could not parse.
        max_records: records per step at most (one poll batch).
        poll_timeout: seconds a step waits for records.
        retention_ms: the changelog's ``delete.retention.ms`` (None: unknown, the
            checkpoint's age is not checked); asked at every step.
        clock: the wall clock (seconds since the epoch), as the broker sees time.
        progress: called after each step as ``progress(changelog partition, done,
            total)``, in offsets.

    Example:
        >>> restorer = Restorer(make_consumer, "H.state-changelog", open_store=open_store)
        >>> restorer.add([3, 5])
        >>> while restorer.busy:
        ...     for restored in restorer.step():
        ...         use(restored.partition, restored.store)
    """

    def __init__(
        self,
        consumer: Callable[[], Consumer],
        changelog_topic: str,
        *,
        open_store: Callable[[int], PartitionStore],
        reject: Callable[[int], Callable[[Record], bool]] | None = None,
        max_records: int = 10_000,
        poll_timeout: float = 0.05,
        retention_ms: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        progress: Callable[[TopicPartition, int, int], None] | None = None,
    ) -> None:
        self._make_consumer = consumer
        self._consumer: Consumer | None = None
        self._topic = changelog_topic
        self._open_store = open_store
        self._reject = reject
        self._max_records = max_records
        self._poll_timeout = poll_timeout
        self._retention_ms = retention_ms
        self._clock = clock
        self._progress = progress
        self._queued: list[int] = []
        self._active: dict[int, _Restoration] = {}
        #: The changelog partitions the consumer is assigned.
        self._assigned: frozenset[int] = frozenset()
        #: A restore began (again): assign the consumer again, at the new positions.
        self._reassign = False

    @property
    def busy(self) -> bool:
        """Whether a partition waits for its restore to begin or end."""
        return bool(self._queued or self._active)

    @property
    def partitions(self) -> list[int]:
        """The partitions waiting for or in restore."""
        return sorted({*self._queued, *self._active})

    def add(self, partitions: Iterable[int]) -> None:
        """Restore these partitions (their stores are opened when their restore begins)."""
        for p in partitions:
            if p not in self._active and p not in self._queued:
                self._queued.append(p)

    def cancel(self, partition: int) -> PartitionStore | None:
        """Stop restoring ``partition``; returns its store if it was opened (close it).

        What was restored stays in the store with its checkpoint (every write is
        atomic), so a later restore resumes from there.
        """
        if partition in self._queued:
            self._queued.remove(partition)
            return None
        restoration = self._active.pop(partition, None)
        if restoration is None:
            return None
        if partition in self._assigned and self._consumer is not None:
            # Stop fetching it now; the next step assigns the others again.
            self._consumer.unassign()
            self._assigned = frozenset()
        return restoration.store

    def step(self) -> list[Restored]:
        """Begin the queued restores and read one slice; returns those that ended.

        Raises:
            StoreError: a store's checkpoint lies beyond its changelog's high watermark
                (the state belongs to another changelog, e.g. a deleted and recreated
                topic), or a store write failed.
        """
        done: list[Restored] = []
        if not self.busy:
            return done
        now = self._clock()
        retention = self._retention_ms()
        consumer = self._restore_consumer()
        while self._queued:
            p = self._queued.pop(0)
            restoration = _Restoration(
                TopicPartition(self._topic, p),
                self._open_store(p),
                self._reject(p) if self._reject is not None else None,
            )
            self._active[p] = restoration
            self._reassign = True
            restoration.begin(consumer, now, retention)
        for restoration in self._active.values():
            if restoration.is_stale(now, retention):
                logger.warning(
                    "%s: the restore took longer than the changelog keeps tombstones allow "
                    "(delete.retention.ms %s ms); starting it again from scratch",
                    restoration.tp,
                    retention,
                )
                restoration.store.clear()
                restoration.begin(consumer, now, retention)
                self._reassign = True
        reading = [r for r in self._active.values() if not r.done]
        if reading:
            self._read(consumer, reading)
        for p, restoration in list(self._active.items()):
            if self._progress is not None:
                self._progress(restoration.tp, *restoration.progress())
            if restoration.done:
                done.append(self._finish(p, restoration))
            else:
                restoration.log_progress()
        if not self._active and self._assigned:
            consumer.unassign()  # nothing left to fetch
            self._assigned = frozenset()
        return done

    def _read(self, consumer: Consumer, reading: list[_Restoration]) -> None:
        wanted = frozenset(r.tp.partition for r in reading)
        if self._reassign or self._assigned != wanted:
            if self._assigned:
                consumer.unassign()
            consumer.assign({r.tp: r.position for r in reading})
            self._assigned = wanted
            self._reassign = False
        records = consumer.poll_batch(self._max_records, self._poll_timeout)
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            p = record.partition()
            if p is not None:
                by_partition.setdefault(p, []).append(record)
        for restoration in reading:
            mine = by_partition.get(restoration.tp.partition, [])
            restoration.advance(mine, consumer.position(restoration.tp))

    def _finish(self, partition: int, restoration: _Restoration) -> Restored:
        restoration.finish()
        del self._active[partition]
        seconds = time.monotonic() - restoration.began
        if restoration.applied or restoration.start < restoration.high:
            logger.info(
                "%s: restore finished at offset %d: %d records in %.2fs",
                restoration.tp,
                restoration.position,
                restoration.applied,
                seconds,
            )
        return Restored(
            partition, restoration.store, restoration.applied, seconds, restoration.wiped
        )

    def _restore_consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = self._make_consumer()
        return self._consumer

    def stop(self) -> list[PartitionStore]:
        """Stop every restore and unassign the consumer; returns the opened stores (close them)."""
        stores = [r.store for r in self._active.values()]
        self._active.clear()
        self._queued.clear()
        if self._consumer is not None and self._assigned:
            try:
                self._consumer.unassign()
            except DurafkaError:
                logger.debug("unassigning the restore consumer failed", exc_info=True)
        self._assigned = frozenset()
        return stores

    def close(self) -> list[PartitionStore]:
        """:meth:`stop`, then close the restore consumer; returns the opened stores."""
        stores = self.stop()
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # closing is best effort
                logger.debug("closing the restore consumer failed", exc_info=True)
            self._consumer = None
        return stores


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
    tombstone_retention_ms: int | None = None,
) -> int:
    """Bring ``store`` up to date with the ``changelog`` partition, blocking until done.

    Reads from the store's checkpoint (or the beginning of the partition) up to the
    high watermark read at the start, then leaves the consumer unassigned. A
    :class:`Restorer` with one partition, stepped until it is done.

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
        tombstone_retention_ms: the changelog's ``delete.retention.ms``: a store whose
            checkpoint is older (less the margin, see :func:`stale_reason`) is wiped
            and restored in full (None: the age is not checked). A checkpoint below
            the low watermark always is.

    Returns:
        The number of changelog records applied (tombstones included, rejected
        records not).

    Raises:
        StoreError: the stored checkpoint lies beyond the changelog's high watermark
            (the state belongs to another changelog, e.g. a deleted and recreated
            topic), or the store write failed.
        WaitTimeoutError: ``deadline`` passed before the high watermark was reached.
    """
    restorer = Restorer(
        lambda: consumer,
        changelog.topic,
        open_store=lambda _: store,
        reject=(lambda _: reject) if reject is not None else None,
        max_records=max_records,
        poll_timeout=poll_timeout,
        retention_ms=lambda: tombstone_retention_ms,
        progress=(lambda _, done, total: progress(done, total)) if progress is not None else None,
    )
    restorer.add([changelog.partition])
    try:
        while True:
            for restored in restorer.step():
                return restored.applied
            restoration = restorer._active[changelog.partition]  # noqa: SLF001 (same module)
            if deadline is not None and time.monotonic() >= deadline:
                resume = store.changelog_offset()
                raise WaitTimeoutError(
                    f"restoring {changelog} did not finish in time: at offset "
                    f"{restoration.position} of {restoration.high} after "
                    f"{time.monotonic() - restoration.began:.1f}s ({restoration.applied} "
                    f"records applied); the next attempt resumes from offset "
                    f"{restoration.start if resume is None else resume}"
                )
    finally:
        restorer.stop()
