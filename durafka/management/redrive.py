"""Redriving dead letters: their records produced again to their source topic, at most once.

For after a fix: the instance an event was for now exists, the entity is
registered, the upgraded worker knows the activity. ``durafka dead-letters
redrive`` and ``POST /api/dead-letters/{id}/redrive`` call :func:`redrive`.

A redrive produces the original record (key, value and headers, plus
``durafka-redriven-from: <partition>:<offset>``) to its source topic, on the
partition its key hashes to. Only records of ``H.orchestrations`` and
``H.activities`` whose value and headers were kept whole can be redriven
(:func:`~durafka.management.deadletters.not_redrivable`); stored values are for
people.

**No duplicates.** The redriven record and a receipt on ``H.dead-letters`` (a
``null`` value with a ``durafka-redrive-of: <partition>:<offset>`` header, on
the dead letter's partition) commit in one Kafka transaction, and a dead letter
with a receipt is refused. The transactional id is one per task hub
(``H.dead-letters.redrive``): a redrive first fences any other one still running
(its transaction aborts), and only then reads the receipts (read_committed), so
two redrives of one dead letter, even at the same time, produce it once.
Besides, what the processor applies is mostly idempotent (a start of an
execution it has seen, a result already applied are dropped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Final

from durafka.errors import DurafkaError
from durafka.management.deadletters import (
    REDRIVE_OF_HEADER,
    dead_letter_fields,
    not_redrivable,
    parse_dead_letter_id,
    redriven,
)
from durafka.management.models import RedriveOutcome
from durafka.partitioning import partition_for
from durafka.topology import HubTopics
from durafka.transport.base import TransactionalProducer, Transport

__all__ = ["REDRIVEN_FROM_HEADER", "redrive"]

#: The header of a redriven record: ``<partition>:<offset>`` of its dead letter.
REDRIVEN_FROM_HEADER: Final = "durafka-redriven-from"
_FLUSH_TIMEOUT_S: Final = 30.0


def redrive(
    transport: Transport, topics: HubTopics, ids: Iterable[str], **producer_config: Any
) -> list[RedriveOutcome]:
    """Produce the records of the dead letters ``ids`` again, in one transaction.

    Args:
        transport: the task hub's transport.
        topics: the task hub's names.
        ids: dead letter ids, ``<partition>:<offset>``.
        producer_config: settings of the transactional producer.

    Returns:
        One outcome per distinct id, in order: where it went, or why it was refused
        (no such dead letter, redriven already, not redrivable).

    Raises:
        ValueError: an id is not ``<partition>:<offset>``.
        DurafkaError: the transaction failed (nothing was redriven).
    """
    wanted = list(dict.fromkeys(parse_dead_letter_id(i) for i in ids))
    producer = transport.transactional_producer(f"{topics.dead_letters}.redrive", **producer_config)
    try:
        # Fence any other redrive first, then read the receipts it may have committed.
        producer.init_transactions()
        outcomes: list[RedriveOutcome] = []
        chosen: list[tuple[str, int, dict[str, Any]]] = []
        for partition, offset in wanted:
            label = f"{partition}:{offset}"
            letter = dead_letter_fields(transport, topics, partition, offset)
            if letter is None:
                refused: str | None = "no such dead letter"
            elif redriven(transport, topics, partition, offset):
                refused = "it was redriven already"
            else:
                refused = not_redrivable(letter, topics)
            if refused is not None or letter is None:
                outcomes.append(RedriveOutcome(id=label, refused=refused))
            else:
                chosen.append((label, partition, letter))
        if chosen:
            outcomes.extend(_produce(transport, producer, topics, chosen))
        return outcomes
    finally:
        producer.close()


def _produce(
    transport: Transport,
    producer: TransactionalProducer,
    topics: HubTopics,
    chosen: list[tuple[str, int, dict[str, Any]]],
) -> list[RedriveOutcome]:
    partitions: dict[str, int] = {}
    outcomes = []
    producer.begin_transaction()
    try:
        for label, partition, letter in chosen:
            topic: str = letter["source_topic"]
            if topic not in partitions:
                partitions[topic] = transport.partition_count(topic)
            key: bytes = letter["key"]
            target = partition_for(key, partitions[topic])
            headers = [(h["key"], h["value"]) for h in letter["headers"]]
            headers.append((REDRIVEN_FROM_HEADER, label.encode()))
            producer.produce(topic, target, key, letter["value"], headers=headers)
            receipt = [(REDRIVE_OF_HEADER, label.encode())]
            producer.produce(topics.dead_letters, partition, key, None, headers=receipt)
            outcomes.append(RedriveOutcome(id=label, target=f"{topic}[{target}]"))
        if producer.flush(_FLUSH_TIMEOUT_S):
            raise DurafkaError(f"the redriven records were not delivered in {_FLUSH_TIMEOUT_S} s")
        producer.commit_transaction()
    except BaseException:
        with contextlib.suppress(DurafkaError):  # closing the producer aborts it anyway
            producer.abort_transaction()
        raise
    return outcomes
