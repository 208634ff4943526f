"""Poison: records Kafka refuses for good, and the sources they came from.

A record the client or the broker refuses for good (larger than a record may
be, invalid) fails its transaction every time the batch is processed again. So
the processor remembers, per partition, whose processing made it (its
:data:`~durafka.processor.batch.Source`, found by the
:class:`~durafka.processor.checkpoint.Checkpoint`'s ``rejected`` records) and
processes the batch again with that source marked:

* an orchestration instance is processed, then failed with the reason
  (``fail_instance``: its records of the batch are dropped);
* an entity's input records of the batch are dead-lettered with the reason
  instead of being applied;
* an input record whose forward to its partition was refused is dead-lettered;
* an input record whose dead letter was refused is dropped (logged, counted);
* a stored value (a malformed key, a quarantined instance's) whose dead letter
  was refused is deleted without one.

Dead letters and forwards look up their source's mark in
:class:`~durafka.processor.rejects.Rejects`, the one place the processor makes
them.

If a marked source is refused again (its failure cannot be written either: a
topic limit far below Kafka's defaults), its input records are dead-lettered
and it is not processed at all. A mark lasts until a batch that used it
commits, or the partition is revoked.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from durafka.processor.batch import Source

__all__ = ["Mark", "PoisonSources"]

log = logging.getLogger("durafka.processor")


@dataclass(slots=True)
class Mark:
    """Why a source's record was refused, and how often.

    Attributes:
        reason: what the client or the broker said, with the sizes.
        error_type: the error type an instance failed for it reports.
        strikes: how many times a record of this source was refused (2 or more: even
            its failure could not be written).
    """

    reason: str
    error_type: str
    strikes: int = 1


class PoisonSources:
    """The marked sources of each partition (see the module docstring).

    Attributes:
        refused: records refused so far (each time a checkpoint was rejected).
        outcomes: what became of marked sources, by outcome.
    """

    def __init__(self) -> None:
        self._marks: dict[int, dict[Source, Mark]] = {}
        self._used: dict[int, set[Source]] = {}
        self.refused = 0
        self.outcomes: Counter[str] = Counter()

    def mark(self, partition: int, source: Source, reason: str, error_type: str) -> None:
        """A record ``source`` made on ``partition`` was refused for ``reason``."""
        self.refused += 1
        marks = self._marks.setdefault(partition, {})
        mark = marks.get(source)
        if mark is None:
            marks[source] = Mark(reason, error_type)
        else:
            mark.strikes += 1
        log.warning(
            "a record of %r on partition %d was refused (%s); processing the batch again "
            "with it marked",
            source,
            partition,
            reason,
        )

    def of(self, partition: int) -> dict[Source, Mark] | None:
        """The marks of ``partition``, or None when it has none (the usual case)."""
        return self._marks.get(partition)

    def use(self, partition: int, source: Source, outcome: str) -> bool:
        """Note that this batch acted on the mark of ``source``; False if it already did."""
        used = self._used.setdefault(partition, set())
        if source in used:
            return False
        used.add(source)
        self.outcomes[outcome] += 1
        return True

    def new_batch(self) -> None:
        """A batch starts (again): no mark has been acted on in it yet."""
        self._used.clear()

    def committed(self, partition: int) -> None:
        """The batch committed ``partition``: the marks it acted on are done."""
        used = self._used.pop(partition, None)
        marks = self._marks.get(partition)
        if not used or marks is None:
            return
        for source in used:
            marks.pop(source, None)
        if not marks:
            del self._marks[partition]

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the marks of revoked or restored ``partitions``."""
        for p in partitions:
            self._marks.pop(p, None)
            self._used.pop(p, None)
