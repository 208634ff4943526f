"""Malformed store keys: found by restore or by a timer scan, dead-lettered and deleted.

Only a bug or another program writing into ``H.state-changelog`` makes a key
that breaks the layout of :mod:`durafka.state.keys`, e.g. ``t/garbage``. Such
a key used to kill every restore of its partition (``invalid literal for int()``,
without a word of which key). Now:

* restore leaves a malformed record out of the store and logs its partition,
  offset and key (:meth:`MalformedKeys.screen`);
* a timer scan that meets a malformed key already in the store (written there by
  an older version's restore) skips it and logs it (:meth:`MalformedKeys.first_due`,
  :meth:`MalformedKeys.found`);
* the next batch deletes the key (a tombstone in the changelog, so compaction
  removes it) and dead-letters it with the reason, in its transaction
  (:meth:`MalformedKeys.drain`). A batch that fails loses that work; a key still
  in the store is found again by the next scan, one left out by restore by the
  next full restore.

Only keys the processor parses are checked (timer keys): other keys are read by
exact key or prefix only, and a newer version may add kinds of keys that an
older one must not delete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from durafka.errors import MalformedKeyError
from durafka.processor.batch import Batch, OwnedPartition
from durafka.processor.rejects import Rejects
from durafka.state.keys import check_store_key, parse_timer_key
from durafka.topology import HubTopics
from durafka.transport.base import Record

__all__ = ["MalformedKeys", "first_due"]

log = logging.getLogger("durafka.processor")


#: The ``reason`` label of these dead letters in the metrics.
_CAUSE = MalformedKeyError.__name__


@dataclass(slots=True)
class _Found:
    key: bytes
    value: bytes | None
    reason: str
    #: The changelog record restore read; None when found in the store.
    record: Record | None


def first_due(
    timers: Iterable[tuple[bytes, bytes]], on_malformed: Callable[[bytes, bytes, str], None]
) -> int | None:
    """The due time of the first well-formed timer key; malformed ones go to ``on_malformed``."""
    for key, value in timers:
        try:
            return parse_timer_key(key)[0]
        except MalformedKeyError as exc:
            on_malformed(key, value, str(exc))
    return None


class MalformedKeys:
    """The malformed keys found on the owned partitions, until a batch deletes them.

    Args:
        topics: the task hub's topic names.
        rejects: dead-letters them.
    """

    def __init__(self, topics: HubTopics, rejects: Rejects) -> None:
        self._changelog = topics.changelog
        self._rejects = rejects
        self._pending: dict[int, dict[bytes, _Found]] = {}

    def screen(self, partition: int) -> Callable[[Record], bool]:
        """A ``reject`` for :func:`~durafka.state.restore.restore_partition` of ``partition``."""

        def reject(record: Record) -> bool:
            key = record.key()
            reason = None if key is None else check_store_key(key)
            if key is None or reason is None:
                return False
            log.error(
                "restoring %s[%d]: the record at offset %s has a %s; it is left out of the "
                "store and will be dead-lettered and deleted",
                self._changelog,
                partition,
                record.offset(),
                reason,
            )
            self._pending.setdefault(partition, {})[key] = _Found(
                key, record.value(), reason, record
            )
            return True

        return reject

    def found(self, partition: int, key: bytes, value: bytes | None, reason: str) -> None:
        """A timer scan met a malformed ``key`` in the store of ``partition``."""
        pending = self._pending.setdefault(partition, {})
        if key in pending:
            return
        log.error(
            "the store of partition %d holds a %s; it is skipped and will be dead-lettered "
            "and deleted",
            partition,
            reason,
        )
        pending[key] = _Found(key, value, reason, None)

    def first_due(self, partition: int, timers: Iterable[tuple[bytes, bytes]]) -> int | None:
        """The due time of the first well-formed timer of ``partition``; reports the others."""
        return first_due(timers, lambda k, v, reason: self.found(partition, k, v, reason))

    def drain(self, batch: Batch, owned: Mapping[int, OwnedPartition]) -> None:
        """Delete the keys found so far and dead-letter them, in ``batch``'s transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for p, found in pending.items():
            part = owned.get(p)
            if part is None:  # revoked: the next owner finds them again
                continue
            share = batch.of(part)
            for item in found.values():
                share.tx.delete(item.key)
                reason = item.reason
                if item.record is None:
                    reason = f"{reason} (found in the store)"
                self._rejects.stored(
                    share, item.key, item.value, reason, cause=_CAUSE, record=item.record
                )

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what was found on revoked ``partitions`` (their next owner finds it again)."""
        for p in partitions:
            self._pending.pop(p, None)
