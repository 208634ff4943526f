"""Deleting the state of partitions this process no longer owns (Kafka Streams'
``state.cleanup.delay.ms``).

A store left behind by a revoked partition costs disk and, when the partition
comes back, a restore of everything the changelog gained meanwhile; past the
changelog's tombstone retention it would even be wiped on its return
(:mod:`durafka.state.restore`). Kept for a while, it spares a restore to a
partition that returns soon (a rolling restart). :class:`StoreCleaner` deletes
the stores that nobody has used for ``delay``; it runs in the processor loop
(not a thread: nothing to synchronise with), and never touches a store that is
open — the loop passes the partitions it owns or restores, and the store
factory refuses to delete a store another process has open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from durafka.errors import StoreError
from durafka.state.base import StoreFactory

__all__ = ["StoreCleaner"]

logger = logging.getLogger(__name__)

#: How often the cleaner looks at most (a shorter delay looks as often as the delay).
_MAX_INTERVAL_S = 60.0


class StoreCleaner:
    """Deletes the stores of ``hub`` unused for ``delay`` seconds and not in use here.

    Args:
        factory: the stores.
        hub: the task hub.
        delay: seconds a store must have been unused before it is deleted.
        clock: the wall clock (seconds since the epoch), as store times are.
    """

    def __init__(
        self,
        factory: StoreFactory,
        hub: str,
        delay: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._factory = factory
        self._hub = hub
        self._delay = delay
        self._clock = clock
        self._interval = min(max(delay, 0.1), _MAX_INTERVAL_S)
        self._next = time.monotonic() + self._interval

    @property
    def due(self) -> bool:
        """Whether it is time to look again."""
        return time.monotonic() >= self._next

    def step(self, in_use: Collection[int]) -> list[int]:
        """Delete what is due, except the stores of ``in_use``; returns the partitions deleted."""
        self._next = time.monotonic() + self._interval
        now = self._clock()
        deleted: list[int] = []
        try:
            stored = self._factory.stored_partitions(self._hub)
        except (OSError, StoreError) as exc:
            logger.warning("cannot list the stores of task hub %s: %s", self._hub, exc)
            return deleted
        for p, last_used in sorted(stored.items()):
            if p in in_use or now - last_used < self._delay:
                continue
            try:
                gone = self._factory.delete(self._hub, p)
            except StoreError as exc:
                logger.warning("cannot delete the state of partition %d: %s", p, exc)
                continue
            if gone:
                deleted.append(p)
                logger.info(
                    "deleted the state of partition %d of task hub %s: not owned here and "
                    "unused for %.0fs (state_cleanup_delay_ms)",
                    p,
                    self._hub,
                    now - last_used,
                )
        return deleted
