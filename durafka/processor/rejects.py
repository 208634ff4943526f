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
* the stored values of a quarantined instance (source: the changelog, offset -1).

A dead letter carries the record as it was consumed (key, value, headers, offset)
when the event came from one; an event the processor made itself (an entity's
queued message, kept in its store record) is encoded as the message it was, with
offset -1, so that it can be redriven like the others.

A record on the wrong partition (a producer that does not partition with murmur2:
a start, an entity message, or an event whose instance is not on the partition)
is *forwarded*: produced again, as it came and with a ``durafka-forwarded-from``
header, to the partition its key hashes to, in the batch's transaction.
"""

from __future__ import annotations

from durafka.codec.records import encode_message
from durafka.deadletters import DeadLetters
from durafka.partitioning import partition_for
from durafka.processor.batch import PartitionBatch
from durafka.runtime.history import HistoryEvent
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord, Record, header_pairs

__all__ = ["FORWARDED_FROM_HEADER", "Rejects"]

#: The header a forwarded record gets: ``<topic>[<partition>]@<offset>`` it came from.
FORWARDED_FROM_HEADER = "durafka-forwarded-from"


class Rejects:
    """Dead-letters (or forwards) what the processor's batches cannot apply.

    Args:
        topics: the task hub's topic names.
        dead_letters: builds and counts the dead letters.
        partitions: partitions of ``H.orchestrations``.

    Attributes:
        forwarded: records forwarded to their partition so far.
    """

    def __init__(self, topics: HubTopics, dead_letters: DeadLetters, partitions: int) -> None:
        self._topics = topics
        self._dead_letters = dead_letters
        self._partitions = partitions
        self.forwarded = 0

    def record(self, share: PartitionBatch, record: Record, reason: str) -> None:
        """Dead-letter a consumed ``record`` of ``share``'s partition."""
        share.out.append(self._dead_letters.of_record(record, reason, share.now_ms))

    def event(self, share: PartitionBatch, target: str, event: HistoryEvent, reason: str) -> None:
        """Dead-letter ``event`` for ``target``: its record, or the message it was."""
        origin = share.origin(event)
        if origin is not None:
            self.record(share, origin, reason)
            return
        key = target.encode("utf-8", "surrogatepass")
        value = encode_message(target, event)
        self._unconsumed(share, self._topics.orchestrations, key, value, reason)

    def stored(self, share: PartitionBatch, key: bytes, value: bytes | None, reason: str) -> None:
        """Dead-letter a value found in ``share``'s store (source: the changelog, offset -1)."""
        self._unconsumed(share, self._topics.changelog, key, value, reason)

    def _unconsumed(
        self, share: PartitionBatch, topic: str, key: bytes, value: bytes | None, reason: str
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
        )
        share.out.append(letter)

    def right_partition(self, key: bytes, partition: int) -> int | None:
        """The partition ``key`` belongs on, if it is not ``partition`` (None: it is)."""
        right = partition_for(key, self._partitions)
        return None if right == partition else right

    def forward(self, share: PartitionBatch, record: Record, partition: int) -> None:
        """Produce ``record`` again, as it came, to ``partition`` (where its key belongs)."""
        headers = header_pairs(record.headers())
        origin = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        headers.append((FORWARDED_FROM_HEADER, origin.encode()))
        share.out.append(
            OutgoingRecord(
                self._topics.orchestrations, partition, record.key(), record.value(), headers
            )
        )
        self.forwarded += 1
