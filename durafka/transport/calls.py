"""Blocking Kafka client calls in flight, each with the time it may take at most.

librdkafka bounds its blocking calls by the timeout they are given, except
when it does not: after the broker was unreachable for ~30 s, a
``send_offsets_to_transaction`` was seen blocking for good (issue 18; a
coordinator request whose timeout is never checked). Such a call cannot be
interrupted from Python. What can be done is to notice it: every blocking
call of the Kafka transport registers here with its *bound* (its timeout and
what it may legitimately add, e.g. rebalance callbacks inside a poll), and the
watchdog (:mod:`durafka.watchdog`) looks for calls overdue by more than a
grace period. (``send_offsets_to_transaction`` made after a client reported
trouble runs on a helper thread instead, given up with its producer past its
bound: see ``KafkaTransactionalProducer``.)

Registering costs a dictionary insert and delete (the hot path's polls do it
every iteration).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["InFlightCall", "calls_in_flight", "overdue_calls", "tracked"]

_ids = itertools.count()
# token -> (what, thread name, started, bound); dict operations are atomic.
_calls: dict[int, tuple[str, str, float, float]] = {}


@dataclass(frozen=True)
class InFlightCall:
    """A blocking client call that has not returned yet.

    Attributes:
        what: the call, e.g. ``send_offsets_to_transaction(H.processor.p3)``.
        thread: the name of the thread making it (``durafka-processor``, ...).
        elapsed: seconds since it started.
        bound: seconds it may take at most (its timeout and what it may add).
    """

    what: str
    thread: str
    elapsed: float
    bound: float

    def __str__(self) -> str:
        return (
            f"{self.what} on thread {self.thread!r} has run {self.elapsed:.0f} s "
            f"(it should return within {self.bound:.0f} s)"
        )


@contextmanager
def tracked(what: str, bound: float) -> Iterator[None]:
    """Register the blocking call made inside the ``with`` block."""
    token = next(_ids)
    _calls[token] = (what, threading.current_thread().name, time.monotonic(), bound)
    try:
        yield
    finally:
        del _calls[token]


def calls_in_flight() -> list[InFlightCall]:
    """Every registered call that has not returned yet, the longest-running first."""
    now = time.monotonic()
    found = [
        InFlightCall(what, thread, now - started, bound)
        for what, thread, started, bound in list(_calls.values())
    ]
    return sorted(found, key=lambda c: -c.elapsed)


def overdue_calls(grace: float) -> list[InFlightCall]:
    """The calls running longer than their bound plus ``grace`` seconds."""
    return [c for c in calls_in_flight() if c.elapsed > c.bound + grace]
