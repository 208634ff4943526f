"""Hosting: run a processor and/or an activity worker on background threads (:class:`Runner`).

The embedded runner (both, in the app's process) is what ``app.run()`` starts;
``durafka processor`` and ``durafka worker`` run one role each, as deployed in
production (one process per core is the way to use several cores).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from durafka.errors import DurafkaError

log = logging.getLogger("durafka.runner")


@dataclass
class _Role:
    name: str
    target: Callable[[threading.Event], None]
    thread: threading.Thread | None = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)


def tune_garbage_collector(young_threshold: int) -> None:
    """Collect the young generation every ``young_threshold`` allocations at most.

    The processor loop allocates many short-lived objects per record (events,
    records, coroutine frames); with Python's default threshold of 700 the
    collector ran thousands of times per second and took ~30% of a busy
    processor's time (memory:// W1: 2,880 -> 4,460 orch/s with 50,000). Only
    raises the threshold, so a process that already chose a larger one keeps
    it; 0 changes nothing. The older generations keep their thresholds.
    """
    if young_threshold <= 0:
        return
    young, middle, old = gc.get_threshold()
    if young != 0 and young < young_threshold:  # 0: the process disabled collection
        gc.set_threshold(young_threshold, middle, old)


class Runner:
    """Runs roles (callables taking a stop event) on daemon threads and stops them together.

    Example:
        >>> runner = Runner()
        >>> runner.add("processor", processor.run)
        >>> runner.start(); ...; runner.stop()
    """

    def __init__(self, *, gc_young_threshold: int = 0) -> None:
        self._roles: list[_Role] = []
        self._stop = threading.Event()
        self.gc_young_threshold = gc_young_threshold

    def add(self, name: str, target: Callable[[threading.Event], None]) -> None:
        """Register a role; ``target(stop)`` must return soon after ``stop`` is set."""
        self._roles.append(_Role(name, target))

    def start(self) -> None:
        """Start every role on its own thread."""
        tune_garbage_collector(self.gc_young_threshold)
        self._stop.clear()
        for role in self._roles:
            role.thread = threading.Thread(
                target=self._run_role, args=(role,), name=f"durafka-{role.name}", daemon=True
            )
            role.thread.start()

    def _run_role(self, role: _Role) -> None:
        try:
            role.target(self._stop)
        except BaseException as exc:
            role.error = exc
            log.exception("durafka %s stopped with an error", role.name)
            self._stop.set()

    @property
    def failed(self) -> BaseException | None:
        """The first error a role stopped with, if any."""
        return next((r.error for r in self._roles if r.error is not None), None)

    def request_stop(self) -> None:
        """Signal every role to stop, without waiting (safe in a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Signal every role to stop and wait for them; re-raise a role's error."""
        self._stop.set()
        for role in self._roles:
            if role.thread is not None:
                role.thread.join(timeout)
                if role.thread.is_alive():
                    log.warning("durafka %s did not stop within %.0fs", role.name, timeout)
        err = self.failed
        if err is not None:
            raise DurafkaError(f"a durafka role failed: {err}") from err

    def wait(self) -> None:
        """Block until a role fails or ``stop()`` is called (for CLI commands)."""
        self._stop.wait()
