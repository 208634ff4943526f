"""A thread pool without a ``Future`` per call, for the activity hot paths.

``ThreadPoolExecutor.submit`` makes a ``Future`` (with its ``Condition`` and
``RLock``) per call; for activities that take microseconds that bookkeeping
cost more than the activity (~13% of a busy processor's time). Here a call
is one item on a C-implemented queue, and the callable reports its own
outcome (to the processor's or the worker's completion queue).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

log = logging.getLogger("durafka.threadpool")


class CallbackThreadPool:
    """Up to ``max_threads`` daemon threads running submitted calls in order.

    Threads start as needed (one per call while none is idle, up to the limit)
    and live until :meth:`shutdown`. A call's exceptions are the caller's to
    handle inside the callable; one that escapes is logged, and the thread goes on.

    Example:
        >>> pool = CallbackThreadPool(8, "durafka-activity")
        >>> pool.submit(print, "hello")
        >>> pool.shutdown()
    """

    def __init__(self, max_threads: int, name: str) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self._max_threads = max_threads
        self._name = name
        self._calls: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a call, or about to (guarded by _lock)
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread."""
        if self._shut_down:
            raise RuntimeError(f"the {self._name} pool is shut down")
        self._calls.put((fn, args))
        with self._lock:
            spawn = self._idle == 0 and len(self._threads) < self._max_threads
            if spawn:
                self._idle += 1  # counted before it starts, so one call spawns one thread
        if spawn:
            thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        calls, lock = self._calls, self._lock
        while True:
            item = calls.get()
            with lock:
                self._idle -= 1
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:
                log.exception("a call on the %s pool raised", self._name)
            with lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Drop the calls not started yet and let the threads end after their current one."""
        if self._shut_down:
            return
        self._shut_down = True
        while True:
            try:
                self._calls.get_nowait()
            except Empty:
                break
        for _ in self._threads:
            self._calls.put(None)
