"""The watchdog: a Kafka call stuck past its bound stops the process (or the roles).

Every blocking call of the Kafka transport says how long it may take
(:mod:`durafka.transport.calls`). A call still running ``grace`` seconds past
that bound is stuck: librdkafka is known to leave a transactional call
blocked for good after the broker was unreachable for ~30 s (issue 18). It
cannot be interrupted, and the role thread making it processes nothing while
keeping its partitions (a static range for good; in group mode until the
member is evicted).

What the watchdog does then (:class:`Watchdog` ``on_stuck``):

* ``durafka processor | worker | run``: log the stuck call and every thread's
  stack, and exit the process with :data:`EXIT_STUCK` (75, ``EX_TEMPFAIL``)
  at once. The supervisor (Kubernetes, systemd) starts it again; the new
  incarnation's producers, with the same ``transactional.id`` (kept in the
  state dir), fence the stuck one and abort its open transaction.
* embedded (``app.run()``, ``app.running()``): the process is the
  application's, not durafka's to end. The runner records a
  :class:`~durafka.errors.StuckCallError` as its failure and asks every role
  to stop; the stuck thread stays blocked (a daemon thread), and leaving the
  ``with`` block raises the error. Restart the app (or the process) to
  recover.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
from collections.abc import Callable

from durafka.errors import StuckCallError
from durafka.transport.calls import InFlightCall, overdue_calls

__all__ = ["CHECK_INTERVAL_S", "EXIT_STUCK", "Watchdog"]

log = logging.getLogger("durafka.watchdog")

#: The exit status of a process the watchdog stopped (``EX_TEMPFAIL``: try again).
EXIT_STUCK = 75
#: How often the watchdog looks at the calls in flight.
CHECK_INTERVAL_S = 1.0


class Watchdog:
    """A daemon thread that looks for Kafka calls stuck past their bound.

    Args:
        grace: seconds a call may run past its own bound before it counts as stuck.
        on_stuck: called once, on the watchdog's thread, with the stuck calls.

    Example:
        >>> watchdog = Watchdog(60.0, on_stuck=lambda calls: os._exit(EXIT_STUCK))
        >>> watchdog.start(); ...; watchdog.stop()
    """

    def __init__(self, grace: float, on_stuck: Callable[[list[InFlightCall]], None]) -> None:
        self.grace = grace
        self._on_stuck = on_stuck
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The stuck calls once found (None until then).
        self.found: list[InFlightCall] | None = None

    def start(self) -> None:
        """Start watching (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="durafka-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (returns at once)."""
        self._stop.set()
        self._thread = None

    def check(self) -> list[InFlightCall]:
        """The calls stuck now (and report them, the first time)."""
        stuck = overdue_calls(self.grace)
        if stuck and self.found is None:
            self.found = stuck
            log.critical(
                "a Kafka call is stuck: %s; librdkafka did not return although the call's "
                "timeout passed (a known problem after the broker was unreachable). The "
                "threads' stacks follow on stderr",
                "; ".join(map(str, stuck)),
            )
            # Best effort: a closed or redirected stderr must not stop the recovery.
            try:
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            except (OSError, ValueError, RuntimeError):
                log.debug("could not dump the threads' stacks", exc_info=True)
            self._on_stuck(stuck)
        return stuck

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_INTERVAL_S):
            if self.check():
                return


def stuck_error(calls: list[InFlightCall]) -> StuckCallError:
    """The error that reports ``calls`` (for the runner and the command line)."""
    return StuckCallError(
        f"a Kafka call is stuck: {'; '.join(map(str, calls))}. The role that made it "
        "processes nothing; restart the process (its restart fences the stuck producer)"
    )
