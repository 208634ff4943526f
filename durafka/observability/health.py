"""Liveness of a role's loop: when it last made progress.

A role (processor, worker) calls :meth:`Progress.beat` once per loop iteration
(a processor restores its partitions in slices between polls, so it beats
while restoring too). A loop stuck in
a Kafka call, a store write or user code that never returns stops beating:
``/healthz`` turns unhealthy once the last beat is older than
``health_timeout_ms``. One attribute write per iteration, no lock: the loop is
the only writer, readers only compare times.

A watchdog of stuck calls can read the same signal (:meth:`Progress.age`).
"""

from __future__ import annotations

import time

__all__ = ["Progress"]


class Progress:
    """The :func:`time.monotonic` time of a loop's last progress.

    Example:
        >>> progress = Progress()
        >>> progress.beat()  # the loop went round once
        >>> progress.age() < 1.0
        True
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        """The loop made progress now."""
        self.last = time.monotonic()

    def age(self) -> float:
        """Seconds since the last progress."""
        return time.monotonic() - self.last
