"""What the processor cannot apply: dead-lettered with the reason, or forwarded.

Every record of ``H.orchestrations`` gets a visible outcome. The ones that cannot
be applied where they are become dead letters (:mod:`durafka.deadletters`) in the
batch's transaction, counted in ``Processor.dead_letters.count``:

* a value that does not decode, an invalid instance id, a key that is not the id
  (:mod:`durafka.processor.loop`);
* an event for an unknown instance, a message kind its target does not take, a
  purge of an instance that has not finished, the records sent to a quarantined
  instance (:mod:`durafka.processor.orchestrations`);
* an entity message that cannot be applied: a malformed lock request or release, a
  signal to an unregistered entity, a kind entities do not take, an operation path
  that raised (:mod:`durafka.processor.entities`);
* the stored values of a quarantined instance or entity (source: the changelog,
  offset -1), malformed store keys (:mod:`durafka.processor.malformed`);
* an entity operation or lock request that cannot be queued (its queue would not
  fit in a record), the input of an entity whose records Kafka refuses, of an
  instance even whose failure Kafka refuses (:mod:`durafka.processor.poison`).

A dead letter carries the record as it was consumed (key, value, headers, offset)
when the event came from one; an event the processor made itself (an entity's
queued message, kept in its store record) is encoded as the message it was, with
offset -1, so that it can be redriven like the others.

A record on the wrong partition (a producer that does not partition with murmur2:
a start, an entity message, or an event whose instance is not on the partition)
is *forwarded*: produced again, as it came and with a ``durafka-forwarded-from``
header, to the partition its key hashes to, in the batch's transaction.

Every dead letter and forward is emitted with its
:data:`~durafka.processor.batch.Source` (the consumed record's offset, else the
instance or entity whose message it is, or a stored value's key), so a dead letter or a
forward Kafka refuses for good (:mod:`durafka.processor.poison`) gets an outcome
on the batch processed again: a refused forward becomes a dead letter, a refused
dead letter of a consumed record leaves the record dropped (logged, counted in
``PoisonSources.outcomes``), a stored value is deleted without one.
"""

from __future__ import annotations

import logging

from durafka.codec.records import encode_message
from durafka.deadletters import DeadLetters
from durafka.partitioning import partition_for
from durafka.processor.batch import PartitionBatch, Source
from durafka.processor.poison import Mark, PoisonSources
from durafka.runtime.history import HistoryEvent
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord, Record, header_pairs

__all__ = ["FORWARDED_FROM_HEADER", "Rejects"]

log = logging.getLogger("durafka.processor")

#: The header a forwarded record gets: ``<topic>[<partition>]@<offset>`` it came from.
FORWARDED_FROM_HEADER = "durafka-forwarded-from"


class Rejects:
    """Dead-letters (or forwards) what the processor's batches cannot apply.

    The one way the processor dead-letters a source record (see the module docstring).

    Args:
        topics: the task hub's topic names.
        dead_letters: builds and counts the dead letters.
        partitions: partitions of ``H.orchestrations``.
        poison: the marked sources of refused records.

    Attributes:
        forwarded: records forwarded to their partition so far.
    """

    def __init__(
        self,
        topics: HubTopics,
        dead_letters: DeadLetters,
        partitions: int,
        poison: PoisonSources,
    ) -> None:
        self._topics = topics
        self._dead_letters = dead_letters
        self._partitions = partitions
        self._poison = poison
        self.forwarded = 0

    def record(
        self, share: PartitionBatch, record: Record, reason: str, *, cause: str = "other"
    ) -> None:
        """Dead-letter a consumed ``record`` of ``share``'s partition.

        ``cause``: a short kind of ``reason`` (the metric's label, see
        :meth:`DeadLetters.build`). A record whose dead letter Kafka refused before
        is dropped instead (logged): nothing else is left to write.
        """
        offset = record.offset()
        assert offset is not None
        mark = self._mark(share, offset)
        if mark is not None:
            if self._poison.use(share.number, offset, "record dropped"):
                log.error(
                    "dropped %s[%d]@%d (key %r): its dead letter cannot be written: %s",
                    record.topic(),
                    share.number,
                    offset,
                    record.key(),
                    mark.reason,
                )
            return
        share.emit(self._dead_letters.of_record(record, reason, share.now_ms, cause=cause), offset)

    def event(
        self,
        share: PartitionBatch,
        target: str,
        event: HistoryEvent,
        reason: str,
        *,
        cause: str = "other",
    ) -> None:
        """Dead-letter ``event`` for ``target``: its record, or the message it was."""
        origin = share.origin(event)
        if origin is not None:
            self.record(share, origin, reason, cause=cause)
            return
        key = target.encode("utf-8", "surrogatepass")
        value = encode_message(target, event)
        self._unconsumed(share, self._topics.orchestrations, key, value, reason, cause, target)

    def stored(
        self,
        share: PartitionBatch,
        key: bytes,
        value: bytes | None,
        reason: str,
        *,
        cause: str = "other",
        record: Record | None = None,
    ) -> None:
        """Dead-letter a value found in ``share``'s store (source: the changelog, offset -1).

        ``record``: the changelog record it was restored from, when known (the dead
        letter names its offset). The caller deletes the value; if its dead letter
        was refused before, it is deleted without one (logged).
        """
        mark = self._mark(share, key)
        if mark is not None:
            if self._poison.use(share.number, key, "dead letter dropped"):
                log.error(
                    "deleted store key %r without a dead letter, which cannot be written: %s",
                    key,
                    mark.reason,
                )
            return
        if record is not None:
            share.emit(self._dead_letters.of_record(record, reason, share.now_ms, cause=cause), key)
            return
        self._unconsumed(share, self._topics.changelog, key, value, reason, cause, key)

    def _unconsumed(
        self,
        share: PartitionBatch,
        topic: str,
        key: bytes,
        value: bytes | None,
        reason: str,
        cause: str,
        source: Source,
    ) -> None:
        """A dead letter of something not read from a topic (offset -1)."""
        letter = self._dead_letters.build(
            reason,
            topic=topic,
            partition=share.number,
            offset=-1,
            key=key,
            value=value,
            now_ms=share.now_ms,
            cause=cause,
        )
        share.emit(letter, source)

    def right_partition(self, key: bytes, partition: int) -> int | None:
        """The partition ``key`` belongs on, if it is not ``partition`` (None: it is)."""
        right = partition_for(key, self._partitions)
        return None if right == partition else right

    def forward(self, share: PartitionBatch, record: Record, partition: int) -> None:
        """Produce ``record`` again, as it came, to ``partition`` (where its key belongs).

        A record whose forward Kafka refused before is dead-lettered instead.
        """
        offset = record.offset()
        assert offset is not None
        mark = self._mark(share, offset)
        if mark is not None and mark.strikes == 1:
            self._poison.use(share.number, offset, "forward dead-lettered")
            reason = f"cannot be forwarded to partition {partition}: {mark.reason}"
            letter = self._dead_letters.of_record(
                record, reason, share.now_ms, cause="RecordRejectedError"
            )
            share.emit(letter, offset)
            return
        if mark is not None:  # its dead letter was refused too
            self.record(share, record, mark.reason)
            return
        headers = header_pairs(record.headers())
        origin = f"{record.topic()}[{record.partition()}]@{offset}"
        headers.append((FORWARDED_FROM_HEADER, origin.encode()))
        share.emit(
            OutgoingRecord(
                self._topics.orchestrations, partition, record.key(), record.value(), headers
            ),
            offset,
        )
        self.forwarded += 1

    def _mark(self, share: PartitionBatch, source: Source) -> Mark | None:
        marks = self._poison.of(share.number)
        return None if marks is None else marks.get(source)
