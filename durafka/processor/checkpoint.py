"""The commit protocol: one Kafka transaction for the partition shares of one producer.

Order (Kafka Streams' exactly-once, quix-streams' ``Checkpoint``):

0. check every record (the shares' records and their changelog records)
   against its topic's record size limit (:class:`~durafka.transport.limits.RecordLimits`):
   this is the one place every record passes, so none can be forgotten. A record
   over it is never produced: the checkpoint is ``REJECTED`` and names it;
1. begin; produce every share's records, then its changelog records (one per
   dirty store key, ``None`` = tombstone);
2. flush: every record delivered, or the transaction is aborted (an
   undelivered record, or a delivery error, is never committed around); a
   record the client or the broker refused for good (too large for the topic's
   real ``max.message.bytes``, invalid) makes the outcome ``REJECTED`` too;
3. send the input offsets of *every* share with the consumer's group metadata,
   also of shares that consumed nothing (a batch of due timers): every
   transaction of a processor fences a zombie that lost its partitions;
4. commit, retried until its outcome is known;
5. only after the commit: write each share's store transaction together with
   the changelog offset reached (from the delivery reports), atomically.

The outcome tells the loop what to do with the shares (see
:class:`CheckpointOutcome`; ``rejected`` names refused records, the loop decides
what becomes of whoever made them); a checkpoint is used once.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from durafka.errors import (
    CommitOutcomeUnknownError,
    RecordRejectedError,
    StoreError,
    TransactionError,
)
from durafka.processor.batch import PartitionBatch
from durafka.state.keys import INPUT_OFFSET_KEY, encode_input_offset
from durafka.transport.base import (
    OutgoingRecord,
    Record,
    TopicPartition,
    TransactionalProducer,
    record_error,
)
from durafka.transport.limits import RecordLimits, record_size

__all__ = ["Checkpoint", "CheckpointOutcome", "Rejection"]

log = logging.getLogger("durafka.processor")

#: One ``commit_transaction`` call waits at most this long before it is called again.
_COMMIT_CALL_TIMEOUT_S = 10.0
_FLUSH_TIMEOUT_S = 30.0
#: Record errors about a size: the broker refuses the whole batch a record was sent in,
#: so of the records refused together only the largest is blamed.
_SIZE_ERRORS = frozenset({"MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_MSG_SIZE"})


class CheckpointOutcome(enum.Enum):
    """What became of a checkpoint's transaction."""

    COMMITTED = "committed"
    """Committed: the shares' stores were written (``dirty`` lists any that failed)."""
    ABORTED = "aborted"
    """Known not committed: process the shares' input again from the committed offsets."""
    FENCED = "fenced"
    """The producer was fenced: another process owns its partitions now."""
    UNKNOWN = "unknown"
    """The commit did not finish in time: it may or may not have committed."""
    REJECTED = "rejected"
    """Not committed: records in ``rejected`` can never be produced (too large, invalid)."""


class Rejection(NamedTuple):
    """A record that can never be produced, and the share that made it.

    ``too_large`` tells a record over a size limit from other refusals (invalid).
    """

    share: PartitionBatch
    record: OutgoingRecord
    reason: str
    too_large: bool


class Checkpoint:
    """Commits the shares of one producer in one transaction (see the module docstring).

    Args:
        producer: the transactional producer owning the shares' partitions.
        shares: the partition shares to commit (their records, store writes, offsets).
        input_topic: ``H.orchestrations`` (whose offsets are committed).
        changelog_topic: ``H.state-changelog``.
        limits: the producer's record size limit of each topic.
        group_metadata: returns the consumer's group metadata at commit time.
        commit_timeout: how long to keep calling ``commit_transaction`` while its
            outcome is unknown (Kafka Streams' ``task.timeout.ms``).
        stop: when set, an unknown commit is given up at once (the process is stopping).
        record_input_offsets: write each share's input offset to its changelog
            partition (``o/``), for the next owner's restore to know it read this
            transaction; needless where a commit is visible on every partition at
            once (``memory://``).
        transaction_timeout: the producer's ``transaction.timeout.ms``, in seconds
            (None: unknown), for :attr:`outlived_timeout`.

    Attributes:
        outcome: set by :meth:`commit`.
        producer_unusable: the producer must be recreated before the next transaction
            (fenced, outcome unknown, or an abort that did not complete).
        dirty: shares whose store write failed after the commit (restore them).
        rejected: the records that made the outcome ``REJECTED``.
        error: what went wrong, for the log.
        outlived_timeout: ``FENCED`` after the transaction had been open for at least
            ``transaction_timeout``. The coordinator aborts such a transaction and bumps
            the producer's epoch, which fences the producer with the same error as a
            newer producer with its ``transactional.id`` would; only a transaction that
            old can have been fenced that way.
    """

    def __init__(
        self,
        producer: TransactionalProducer,
        shares: Sequence[PartitionBatch],
        *,
        input_topic: str,
        changelog_topic: str,
        limits: RecordLimits,
        group_metadata: Callable[[], Any],
        commit_timeout: float,
        stop: threading.Event | None = None,
        record_input_offsets: bool = True,
        transaction_timeout: float | None = None,
    ) -> None:
        self.producer = producer
        self._transaction_timeout = transaction_timeout
        self._began: float | None = None
        self._record_input_offsets = record_input_offsets
        self.shares = list(shares)
        self._input_topic = input_topic
        self._changelog_topic = changelog_topic
        self._limits = limits
        self._group_metadata = group_metadata
        self._commit_timeout = commit_timeout
        self._stop = stop
        self._changelog_offsets: dict[int, int] = {}
        self._delivery_error: Any = None
        self._failed_deliveries: list[tuple[Any, Record]] = []
        self.outcome: CheckpointOutcome | None = None
        self.producer_unusable = False
        self.dirty: list[PartitionBatch] = []
        self.rejected: list[Rejection] = []
        self.error: Exception | None = None
        self.outlived_timeout = False

    @property
    def partitions(self) -> list[int]:
        """The input partitions this checkpoint commits."""
        return [share.number for share in self.shares]

    def commit(self) -> CheckpointOutcome:
        """Run the transaction; on success write the stores. Returns the outcome."""
        if self.outcome is not None:
            raise RuntimeError("a Checkpoint commits once; create a new one")
        if self._record_input_offsets:
            for share in self.shares:
                # With the changelog records, in every transaction: a new owner restores
                # until it has read the transaction that committed the offset it starts at.
                share.tx.put(INPUT_OFFSET_KEY, encode_input_offset(share.offset_to_commit))
        changes = [share.tx.prepare() for share in self.shares]
        self.rejected = self._oversized(changes)
        if self.rejected:
            self.error = TransactionError(self.rejected[0].reason)
            return self._end(CheckpointOutcome.REJECTED)
        try:
            self._produce_and_send_offsets(changes)
        except TransactionError as exc:
            return self._failed_before_commit(exc)
        except Exception as exc:  # e.g. the producer queue stayed full
            return self._failed_before_commit(exc)
        outcome = self._commit()
        if outcome is CheckpointOutcome.COMMITTED:
            self._write_stores()
        return outcome

    def _oversized(self, changes: list[Mapping[bytes, bytes | None]]) -> list[Rejection]:
        """The records over their topic's size limit (none are produced then)."""
        limits = self._limits
        changelog = self._changelog_topic
        changelog_limit = limits.of(changelog)
        smallest = limits.smallest
        found: list[Rejection] = []
        for share, changed in zip(self.shares, changes, strict=True):
            for record in share.out:
                size = record_size(record.key, record.value, record.headers)
                if size > smallest and size > limits.of(record.topic):
                    found.append(Rejection(share, record, self._too_large(record, size), True))
            for key, value in changed.items():
                size = record_size(key, value)
                if size > changelog_limit:
                    record = OutgoingRecord(changelog, share.number, key, value)
                    found.append(Rejection(share, record, self._too_large(record, size), True))
        return found

    def _too_large(self, record: OutgoingRecord, size: int) -> str:
        return (
            f"a record of {size:,} bytes to {record.topic} (key {_key(record.key)}) exceeds "
            f"the {self._limits.of(record.topic):,}-byte record size limit (the producer's "
            "message.max.bytes, the topic's max.message.bytes)"
        )

    def _produce_and_send_offsets(self, changes: list[Mapping[bytes, bytes | None]]) -> None:
        producer = self.producer
        self._began = time.monotonic()
        producer.begin_transaction()
        changelog = self._changelog_topic
        delivered = self._changelog_delivered
        failed = self._out_delivered
        for share, changed in zip(self.shares, changes, strict=True):
            for record in share.out:
                try:
                    producer.produce(
                        record.topic,
                        record.partition,
                        record.key,
                        record.value,
                        failed,
                        headers=record.headers,
                    )
                except RecordRejectedError as exc:
                    self.rejected.append(_rejection(share, record, exc))
                    raise
            for key, value in changed.items():
                try:
                    producer.produce(changelog, share.number, key, value, delivered)
                except RecordRejectedError as exc:
                    record = OutgoingRecord(changelog, share.number, key, value)
                    self.rejected.append(_rejection(share, record, exc))
                    raise
        remaining = producer.flush(_FLUSH_TIMEOUT_S)
        if remaining:
            raise TransactionError(f"{remaining} records were not delivered before the commit")
        if self._failed_deliveries:
            self.rejected = self._refused()
            raise TransactionError(
                f"{len(self._failed_deliveries)} records failed: {self._delivery_error}"
            )
        topic = self._input_topic
        producer.send_offsets(
            {TopicPartition(topic, share.number): share.offset_to_commit for share in self.shares},
            self._group_metadata(),
        )

    def _commit(self) -> CheckpointOutcome:
        deadline = time.monotonic() + self._commit_timeout
        # A few calls fit in the timeout: each failed call is logged, so an operator
        # sees a commit that hangs long before the timeout gives it up.
        per_call = max(0.5, min(_COMMIT_CALL_TIMEOUT_S, self._commit_timeout / 4))
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.producer.commit_transaction(max(0.001, min(per_call, remaining)))
            except CommitOutcomeUnknownError as exc:
                self.error = exc
                stopping = self._stop is not None and self._stop.is_set()
                if stopping or time.monotonic() >= deadline:
                    self.producer_unusable = True
                    return self._end(CheckpointOutcome.UNKNOWN)
                log.warning(
                    "the commit of partitions %s has not finished yet, calling it again: %s",
                    self.partitions,
                    exc,
                )
                continue
            except TransactionError as exc:
                self.error = exc
                if exc.fatal:
                    self.producer_unusable = True
                    return self._end(CheckpointOutcome.FENCED)
                return self._end(self._abort())
            return self._end(CheckpointOutcome.COMMITTED)

    def _failed_before_commit(self, exc: Exception) -> CheckpointOutcome:
        # commit_transaction was never called: nothing of this transaction can be committed.
        self.error = exc
        if isinstance(exc, TransactionError) and exc.fatal:
            self.producer_unusable = True
            return self._end(CheckpointOutcome.FENCED)
        outcome = self._abort()
        if outcome is CheckpointOutcome.ABORTED and self.rejected:
            outcome = CheckpointOutcome.REJECTED
        return self._end(outcome)

    def _refused(self) -> list[Rejection]:
        """The records the broker refused for good, among the failed deliveries.

        A size error refuses the whole batch the record was sent in (the topic's
        ``max.message.bytes`` counts batches), so of the records refused together
        on one partition only the largest is blamed; if it was not the one, the
        next attempt blames the next.
        """
        blamed: dict[tuple[str, int, str], tuple[int, Rejection]] = {}
        found: list[Rejection] = []
        for err, msg in self._failed_deliveries:
            name = record_error(err)
            if name is None:
                continue  # not the record's fault (timeout, leader moved): the retry may pass
            record = OutgoingRecord(msg.topic() or "", msg.partition() or 0, msg.key(), msg.value())
            share = self._share_of(record)
            if share is None:
                continue
            size = record_size(record.key, record.value)
            reason = (
                f"{record.topic}[{record.partition}] refused a record of {size:,} bytes "
                f"(key {_key(record.key)}): {name}"
            )
            rejection = Rejection(share, record, reason, name in _SIZE_ERRORS)
            if name not in _SIZE_ERRORS:
                found.append(rejection)
                continue
            where = (record.topic, record.partition, name)
            if where not in blamed or blamed[where][0] < size:
                blamed[where] = (size, rejection)
        return found + [rejection for _, rejection in blamed.values()]

    def _share_of(self, record: OutgoingRecord) -> PartitionBatch | None:
        for share in self.shares:
            try:
                share.source_of(record, self._changelog_topic)
            except LookupError:
                continue
            return share
        return None

    def _abort(self) -> CheckpointOutcome:
        """Abort; ABORTED, or FENCED when the abort shows the producer was fenced."""
        for share in self.shares:
            share.tx.fail()
        try:
            self.producer.abort_transaction()
        except TransactionError as exc:
            self.producer_unusable = True
            if exc.fatal:
                # An error before the commit (e.g. a failed flush) hid that another
                # producer took over this transactional.id.
                self.error = exc
                return CheckpointOutcome.FENCED
            log.warning("aborting the transaction failed (the producer is recreated): %s", exc)
        except Exception as exc:
            # Not committed either way, but the producer's state is unclear: a new
            # one (init_transactions) aborts whatever is left at the coordinator.
            log.warning("aborting the transaction failed (the producer is recreated): %s", exc)
            self.producer_unusable = True
        return CheckpointOutcome.ABORTED

    def _end(self, outcome: CheckpointOutcome) -> CheckpointOutcome:
        if outcome is not CheckpointOutcome.COMMITTED:
            for share in self.shares:
                share.tx.fail()
        if (
            outcome is CheckpointOutcome.FENCED
            and self._began is not None
            and self._transaction_timeout is not None
        ):
            self.outlived_timeout = time.monotonic() - self._began >= self._transaction_timeout
        self.outcome = outcome
        return outcome

    def _write_stores(self) -> None:
        for share in self.shares:
            try:
                share.tx.complete(self._changelog_offsets.get(share.number))
            except StoreError as exc:
                # Committed in Kafka, not in the store: restoring from the changelog
                # brings the store up to date (re-applying records is idempotent).
                log.error("writing the store of partition %d failed: %s", share.number, exc)
                self.dirty.append(share)
                continue
            part = share.part
            part.committed_offset = share.offset_to_commit
            due = share.earliest_timer_ms
            if due is not None and (part.next_timer_ms is None or due < part.next_timer_ms):
                part.next_timer_ms = due

    def _out_delivered(self, err: Any, record: Record) -> None:
        if err is not None:
            self._failed_deliveries.append((err, record))
            if self._delivery_error is None:
                self._delivery_error = err

    def _changelog_delivered(self, err: Any, record: Record) -> None:
        if err is not None:
            self._out_delivered(err, record)
            return
        p = record.partition()
        off = record.offset()
        if p is not None and off is not None:
            prev = self._changelog_offsets.get(p, -1)
            if off + 1 > prev:
                self._changelog_offsets[p] = off + 1


def _key(key: bytes | None) -> str:
    """A record key for a message: its start, readable."""
    if key is None:
        return "None"
    return repr(key[:200]) + ("..." if len(key) > 200 else "")


def _rejection(
    share: PartitionBatch, record: OutgoingRecord, exc: RecordRejectedError
) -> Rejection:
    return Rejection(share, record, str(exc), exc.code in _SIZE_ERRORS)
