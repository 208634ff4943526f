"""The status view: ``H.status`` materialised into a dict, with waiters.

``H.status`` is compacted and keyed by instance id, so reading it from the
beginning yields the latest status of every instance; a ``None`` value (a
tombstone) means the instance was purged. A feeder reads the topic in the
background and hands batches to :meth:`StatusView.apply`; clients read and
wait on the view (CQRS: the same topic feeds dashboards and analytics).

Two feeders exist because the asyncio client on Kafka must not block its event
loop: :class:`~durafka.transport.feeder.ThreadFeeder` runs any transport's
consumer in a daemon thread (sync client on both transports, async client on
``memory://``), :class:`~durafka.transport.aiokafka.AioKafkaFeeder` is an
aiokafka task on the client's loop. Both mark the view *ready* once they reach
the high watermarks captured when they started, i.e. once the view shows
everything that was published before the client came up.

Waiting never polls: sync waiters sleep on a ``threading.Condition`` that every
applied batch notifies; async waiters are futures resolved through
``loop.call_soon_threadsafe`` by whichever thread applied the record (the
machinery is :class:`~durafka.client.compacted_view.CompactedView`'s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from durafka.client._common import Page
from durafka.client.compacted_view import CompactedView
from durafka.client.listing import InstanceQuery, StatusIndex
from durafka.codec.records import decode_status
from durafka.errors import WaitTimeoutError
from durafka.status import OrchestrationStatus, RuntimeStatus

__all__ = ["Predicate", "StatusView"]

log = logging.getLogger(__name__)

Predicate = Callable[[OrchestrationStatus], bool]
"""A condition on an instance's status, e.g. ``lambda s: s.is_terminal``."""


class StatusView(CompactedView[OrchestrationStatus]):
    """The latest status of every instance, fed from ``H.status`` by a feeder.

    Thread-safe: feeders apply batches from their thread or task while any
    number of threads and event loops read and wait.
    """

    _record_noun = "status"
    _topic_noun = "status"
    _log = log

    def _decode(self, value: bytes) -> OrchestrationStatus:
        return decode_status(value)

    def __init__(self) -> None:
        super().__init__()
        # Built by the first listing (most clients never list), then kept current.
        self._index: StatusIndex | None = None

    def _changed(self, old: OrchestrationStatus | None, new: OrchestrationStatus | None) -> None:
        if self._index is not None:
            self._index.update(old, new)

    def _indexed(self) -> StatusIndex:
        # Called with the lock held.
        if self._index is None:
            self._index = StatusIndex(self._values)
        return self._index

    def get(self, instance_id: str) -> OrchestrationStatus | None:
        """The latest status of ``instance_id``, or ``None`` if unknown or purged."""
        return self._get(instance_id)

    def page(self, query: InstanceQuery) -> Page[OrchestrationStatus]:
        """One page of the instances ``query`` selects (see :mod:`durafka.client.listing`)."""
        with self._cond:
            return self._indexed().page(query)

    def counts(self, name: str | None = None) -> dict[RuntimeStatus, int]:
        """How many instances (of orchestration ``name``) are in each runtime status."""
        with self._cond:
            return self._indexed().counts(name)

    def names(self) -> dict[str, int]:
        """Every orchestration name in the view, with its number of instances."""
        with self._cond:
            return self._indexed().names()

    def all(self) -> list[OrchestrationStatus]:
        """A snapshot of every known status (unordered)."""
        return self._all()

    def wait_for(
        self,
        instance_id: str,
        predicate: Predicate,
        timeout: float | None,
        *,
        what: str = "the awaited status",
    ) -> OrchestrationStatus:
        """Block until the status of ``instance_id`` satisfies ``predicate``.

        Args:
            instance_id: the instance.
            predicate: evaluated on the current status and on every new one.
            timeout: seconds to wait at most; ``None`` waits forever.
            what: names the awaited condition in the timeout message.

        Returns:
            The first status that satisfied ``predicate``.

        Raises:
            WaitTimeoutError: the deadline passed; names the id and the last status seen.
            DurafkaError: the feeder failed or the view was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                current = self._values.get(instance_id)
                if current is not None and predicate(current):
                    return current
                self._raise_error()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(_timeout_message(instance_id, what, timeout, current))
                self._cond.wait(remaining)

    async def wait_for_async(
        self,
        instance_id: str,
        predicate: Predicate,
        timeout: float | None,
        *,
        what: str = "the awaited status",
    ) -> OrchestrationStatus:
        """:meth:`wait_for` for asyncio: the feeder resolves a future, nothing polls."""
        with self._cond:
            current = self._values.get(instance_id)
            if current is not None and predicate(current):
                return current
            self._raise_error()
            waiter = self._add_waiter(instance_id, predicate)
        result: OrchestrationStatus = await self._await(
            waiter,
            instance_id,
            timeout,
            lambda: _timeout_message(instance_id, what, timeout, self.get(instance_id)),
        )
        return result


def _timeout_message(
    instance_id: str, what: str, timeout: float | None, last: OrchestrationStatus | None
) -> str:
    seen = (
        f"last status seen: {last.runtime_status.value}"
        if last is not None
        else "no status was seen for it (is a processor running, and is the id right?)"
    )
    return f"instance {instance_id!r} did not reach {what} within {timeout}s; {seen}"
