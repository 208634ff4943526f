"""Dead letters read back, and redriven to their source topic once the cause is fixed.

``durafka dead-letters list|show|redrive`` (:mod:`durafka.cli.deadletters`) is
built on this module. A dead letter is named by where it sits on
``H.dead-letters``: ``<partition>:<offset>``.

**Redrive** produces the original record again (key, value and headers, plus a
``durafka-redriven-from: <partition>:<offset>`` header) to its source topic, on
the partition its key hashes to. Only records of ``H.orchestrations`` and
``H.activities`` whose value and headers were kept whole can be redriven (a
stored value, or a record cut to fit the dead letter, cannot).

**No duplicates.** Each redrive commits, in one Kafka transaction, the
redriven record *and* a receipt on ``H.dead-letters`` (a record with a null
value and a ``durafka-redrive-of: <partition>:<offset>`` header; readers of
that topic skip null values). A dead letter with a receipt is never redriven
again. The transactional id is one per task hub (``H.dead-letters.redrive``):
starting a redrive fences any other redrive still running (its transaction
aborts), and the receipts are read only after that, read_committed, so two
redrives of the same dead letter, even at the same time, produce it once.
Besides, what the processor applies is idempotent for most records (a start
of an execution it has seen, a result already applied are dropped), so even a
record produced again by other means does not run twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from durafka.codec.records import decode_dead_letter
from durafka.errors import DecodeError, DurafkaError, WaitTimeoutError
from durafka.partitioning import partition_for
from durafka.topology import HubTopics
from durafka.transport.base import (
    TopicPartition,
    TransactionalProducer,
    Transport,
    header_pairs,
)

__all__ = [
    "REDRIVEN_FROM_HEADER",
    "REDRIVE_OF_HEADER",
    "DeadLetterEntry",
    "RedriveOutcome",
    "parse_id",
    "read_dead_letters",
    "redrive",
]

#: The header of a receipt: ``<partition>:<offset>`` of the dead letter it redrove.
REDRIVE_OF_HEADER: Final = "durafka-redrive-of"
#: The header of a redriven record: ``<partition>:<offset>`` of its dead letter.
REDRIVEN_FROM_HEADER: Final = "durafka-redriven-from"

_READ_TIMEOUT_S: Final = 60.0


@dataclass(slots=True)
class DeadLetterEntry:
    """One dead letter as read back from ``H.dead-letters``.

    Attributes:
        partition: its partition on ``H.dead-letters``.
        offset: its offset there.
        letter: the decoded ``DeadLetter`` (a dict of the schema's fields), or None
            if the value does not decode (see ``error``).
        error: why the value does not decode, if it does not.
        redriven: True once a receipt says it was redriven.
    """

    partition: int
    offset: int
    letter: dict[str, Any] | None
    error: str | None = None
    redriven: bool = False

    @property
    def id(self) -> str:
        """``<partition>:<offset>``: how commands name it."""
        return f"{self.partition}:{self.offset}"

    def not_redrivable(self, topics: HubTopics) -> str | None:
        """Why it cannot be redriven (None: it can)."""
        letter = self.letter
        if letter is None:
            return f"it does not decode ({self.error})"
        if self.redriven:
            return "it was redriven already"
        if letter["source_topic"] not in (topics.orchestrations, topics.activities):
            return (
                f"its source {letter['source_topic']} is not an input topic (a stored value "
                "is kept for people, not for processors)"
            )
        if letter["key"] is None or letter["value"] is None:
            return "it has no key or no value"
        cut = [c for c in letter["truncated"] if c != "reason"]
        if cut:
            return f"its {', '.join(cut)} was cut to fit the dead letter"
        return None


def parse_id(text: str) -> tuple[int, int]:
    """``(partition, offset)`` of a dead letter id ``<partition>:<offset>``.

    Raises:
        ValueError: ``text`` is not of that form.
    """
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r} is not a dead letter id (<partition>:<offset>)")
    return int(partition), int(offset)


def read_dead_letters(transport: Transport, hub: str) -> list[DeadLetterEntry]:
    """Every dead letter of ``hub`` up to the topic's end, in (partition, offset) order.

    Raises:
        WaitTimeoutError: the topic could not be read to its end within 60 s.
    """
    topic = HubTopics(hub).dead_letters
    tps = [TopicPartition(topic, p) for p in range(transport.partition_count(topic))]
    consumer = transport.consumer(None)
    entries: dict[tuple[int, int], DeadLetterEntry] = {}
    receipts: set[tuple[int, int]] = set()
    try:
        ends = {tp: consumer.watermarks(tp) for tp in tps}
        consumer.assign({tp: ends[tp][0] for tp in tps})
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while any(consumer.position(tp) < ends[tp][1] for tp in tps):
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"could not read {topic} to its end")
            for record in consumer.poll_batch(1000, 0.2):
                where = (record.partition() or 0, record.offset() or 0)
                value = record.value()
                if value is None:
                    for name, data in header_pairs(record.headers()):
                        if name == REDRIVE_OF_HEADER and data is not None:
                            with contextlib.suppress(ValueError):  # not written by durafka
                                receipts.add(parse_id(data.decode()))
                    continue
                try:
                    entries[where] = DeadLetterEntry(*where, decode_dead_letter(value))
                except DecodeError as exc:
                    entries[where] = DeadLetterEntry(*where, None, str(exc))
    finally:
        consumer.close()
    for where in receipts:
        if where in entries:
            entries[where].redriven = True
    return [entries[k] for k in sorted(entries)]


@dataclass(frozen=True, slots=True)
class RedriveOutcome:
    """What became of one dead letter asked to be redriven.

    Attributes:
        id: the dead letter (``<partition>:<offset>``).
        target: where its record went (``<topic>[<partition>]``), None if it did not.
        refused: why it was not redriven (None: it was).
    """

    id: str
    target: str | None = None
    refused: str | None = None


def redrive(
    transport: Transport, hub: str, ids: Iterable[str], **producer_config: Any
) -> list[RedriveOutcome]:
    """Produce the records of the dead letters ``ids`` again, to their source topics.

    One transaction for all of them, with their receipts (see the module
    docstring); dead letters that cannot be redriven are refused with the reason.

    Args:
        transport: the task hub's transport.
        hub: the task hub.
        ids: dead letter ids ``<partition>:<offset>``.
        producer_config: settings of the transactional producer.

    Raises:
        ValueError: an id is not ``<partition>:<offset>``.
        DurafkaError: the transaction failed (nothing was redriven).
    """
    wanted = [parse_id(i) for i in ids]
    topics = HubTopics(hub)
    producer = transport.transactional_producer(f"{topics.dead_letters}.redrive", **producer_config)
    try:
        # First fence any other redrive, then read the receipts it may have committed.
        producer.init_transactions()
        by_id = {(e.partition, e.offset): e for e in read_dead_letters(transport, hub)}
        outcomes: list[RedriveOutcome] = []
        chosen: list[DeadLetterEntry] = []
        for where in dict.fromkeys(wanted):
            entry = by_id.get(where)
            label = f"{where[0]}:{where[1]}"
            refused = "no such dead letter" if entry is None else entry.not_redrivable(topics)
            if refused is not None or entry is None:
                outcomes.append(RedriveOutcome(label, refused=refused))
                continue
            chosen.append(entry)
        if chosen:
            outcomes.extend(_produce(transport, producer, topics, chosen))
        return outcomes
    finally:
        producer.close()


def _produce(
    transport: Transport,
    producer: TransactionalProducer,
    topics: HubTopics,
    entries: Sequence[DeadLetterEntry],
) -> list[RedriveOutcome]:
    counts: dict[str, int] = {}
    outcomes = []
    producer.begin_transaction()
    try:
        for entry in entries:
            letter = entry.letter
            assert letter is not None
            topic: str = letter["source_topic"]
            if topic not in counts:
                counts[topic] = transport.partition_count(topic)
            key: bytes = letter["key"]
            partition = partition_for(key, counts[topic])
            headers = [(h["key"], h["value"]) for h in letter["headers"]]
            headers.append((REDRIVEN_FROM_HEADER, entry.id.encode()))
            producer.produce(topic, partition, key, letter["value"], headers=headers)
            producer.produce(
                topics.dead_letters,
                entry.partition,
                key,
                None,
                headers=[(REDRIVE_OF_HEADER, entry.id.encode())],
            )
            outcomes.append(RedriveOutcome(entry.id, target=f"{topic}[{partition}]"))
        if producer.flush(30.0):
            raise DurafkaError("the redriven records were not delivered in 30 s")
        producer.commit_transaction()
    except BaseException:
        with contextlib.suppress(DurafkaError):  # closing the producer aborts it anyway
            producer.abort_transaction()
        raise
    return outcomes
