"""The commit protocol: one Kafka transaction for the partition shares of one producer.

Order (Kafka Streams' exactly-once, quix-streams' ``Checkpoint``):

1. begin; produce every share's records, then its changelog records (one per
   dirty store key, ``None`` = tombstone);
2. flush: every record delivered, or the transaction is aborted (an
   undelivered record, or a delivery error, is never committed around);
3. send the input offsets of *every* share with the consumer's group metadata,
   also of shares that consumed nothing (a batch of due timers): every
   transaction of a processor fences a zombie that lost its partitions;
4. commit, retried until its outcome is known;
5. only after the commit: write each share's store transaction together with
   the changelog offset reached (from the delivery reports), atomically.

The outcome tells the loop what to do with the shares (see
:class:`CheckpointOutcome`); a checkpoint is used once.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from durafka.errors import CommitOutcomeUnknownError, StoreError, TransactionError
from durafka.processor.batch import PartitionBatch
from durafka.transport.base import (
    Record,
    TopicPartition,
    TransactionalProducer,
    produce_outgoing,
)

__all__ = ["Checkpoint", "CheckpointOutcome"]

log = logging.getLogger("durafka.processor")

#: One ``commit_transaction`` call waits at most this long before it is called again.
_COMMIT_CALL_TIMEOUT_S = 10.0
_FLUSH_TIMEOUT_S = 30.0


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


class Checkpoint:
    """Commits the shares of one producer in one transaction (see the module docstring).

    Args:
        producer: the transactional producer owning the shares' partitions.
        shares: the partition shares to commit (their records, store writes, offsets).
        input_topic: ``H.orchestrations`` (whose offsets are committed).
        changelog_topic: ``H.state-changelog``.
        group_metadata: returns the consumer's group metadata at commit time.
        commit_timeout: how long to keep calling ``commit_transaction`` while its
            outcome is unknown (Kafka Streams' ``task.timeout.ms``).
        stop: when set, an unknown commit is given up at once (the process is stopping).

    Attributes:
        outcome: set by :meth:`commit`.
        producer_unusable: the producer must be recreated before the next transaction
            (fenced, outcome unknown, or an abort that did not complete).
        dirty: shares whose store write failed after the commit (restore them).
        error: what went wrong, for the log.
    """

    def __init__(
        self,
        producer: TransactionalProducer,
        shares: Sequence[PartitionBatch],
        *,
        input_topic: str,
        changelog_topic: str,
        group_metadata: Callable[[], Any],
        commit_timeout: float,
        stop: threading.Event | None = None,
    ) -> None:
        self.producer = producer
        self.shares = list(shares)
        self._input_topic = input_topic
        self._changelog_topic = changelog_topic
        self._group_metadata = group_metadata
        self._commit_timeout = commit_timeout
        self._stop = stop
        self._changelog_offsets: dict[int, int] = {}
        self._delivery_error: Any = None
        self.outcome: CheckpointOutcome | None = None
        self.producer_unusable = False
        self.dirty: list[PartitionBatch] = []
        self.error: Exception | None = None

    @property
    def partitions(self) -> list[int]:
        """The input partitions this checkpoint commits."""
        return [share.number for share in self.shares]

    def commit(self) -> CheckpointOutcome:
        """Run the transaction; on success write the stores. Returns the outcome."""
        if self.outcome is not None:
            raise RuntimeError("a Checkpoint commits once; create a new one")
        try:
            self._produce_and_send_offsets()
        except TransactionError as exc:
            return self._failed_before_commit(exc)
        except Exception as exc:  # e.g. the producer queue stayed full
            return self._failed_before_commit(exc)
        outcome = self._commit()
        if outcome is CheckpointOutcome.COMMITTED:
            self._write_stores()
        return outcome

    def _produce_and_send_offsets(self) -> None:
        producer = self.producer
        producer.begin_transaction()
        changelog = self._changelog_topic
        delivered = self._changelog_delivered
        for share in self.shares:
            for record in share.out:
                produce_outgoing(producer, record)
            for key, value in share.tx.prepare().items():
                producer.produce(changelog, share.number, key, value, delivered)
        remaining = producer.flush(_FLUSH_TIMEOUT_S)
        if remaining:
            raise TransactionError(f"{remaining} records were not delivered before the commit")
        if self._delivery_error is not None:
            raise TransactionError(f"a changelog record failed: {self._delivery_error}")
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
        return self._end(self._abort())

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

    def _changelog_delivered(self, err: Any, record: Record) -> None:
        if err is not None:
            if self._delivery_error is None:
                self._delivery_error = err
            return
        p = record.partition()
        off = record.offset()
        if p is not None and off is not None:
            prev = self._changelog_offsets.get(p, -1)
            if off + 1 > prev:
                self._changelog_offsets[p] = off + 1
