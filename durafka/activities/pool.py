"""Where activities run: a thread pool for ``def`` ones, an event-loop thread for ``async def``.

Both the worker and the processor's local activities use these two.

``ThreadPoolExecutor.submit`` makes a ``Future`` (with its ``Condition`` and
``RLock``) per call; for activities that take microseconds that bookkeeping
cost more than the activity (~13% of a busy processor's time). Here a call
is one item on a C-implemented queue, and the callable reports its own
outcome (to the processor's or the worker's completion queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

log = logging.getLogger("durafka.threadpool")

__all__ = ["CallbackThreadPool", "EventLoopThread"]


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
        # Guarded by _lock. An idle thread is promised to one call at submit time, so a
        # call never counts on a thread another call is about to take (a hung call
        # would otherwise hold back the calls submitted right after it).
        self._idle = 0  # threads waiting for a call and promised to none
        self._unpromised = 0  # calls queued while every thread was busy, at the limit
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread."""
        if self._shut_down:
            raise RuntimeError(f"the {self._name} pool is shut down")
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            else:
                spawn = len(self._threads) < self._max_threads
                if spawn:
                    # Counted now, so that concurrent submits see it.
                    self._threads.append(
                        threading.Thread(target=self._work, name=self._name, daemon=True)
                    )
                else:
                    self._unpromised += 1
            thread = self._threads[-1] if spawn else None
        self._calls.put((fn, args))
        if thread is not None:
            thread.start()

    def _work(self) -> None:
        calls, lock = self._calls, self._lock
        while True:
            item = calls.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:
                log.exception("a call on the %s pool raised", self._name)
            with lock:
                if self._unpromised:
                    self._unpromised -= 1  # the next get() takes one of those
                else:
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


class EventLoopThread:
    """An asyncio event loop running on a daemon thread of its own, started on first use.

    When stopped, the thread cancels the tasks still on the loop (waiting up to
    a second for them to end) and closes the loop, so no coroutine is left
    pending and no loop leaks.

    Example:
        >>> loop_thread = EventLoopThread("durafka-activity-loop")
        >>> asyncio.run_coroutine_threadsafe(coro, loop_thread.loop())
        >>> loop_thread.stop(join_timeout=2.0)

    Args:
        name: the thread's name.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (the thread starts on the first call)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_event_loop, args=(loop,), name=self._name, daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def stop(self, join_timeout: float | None = None) -> None:
        """Stop the loop (a no-op if it never started).

        Args:
            join_timeout: wait up to this many seconds for the thread to end;
                None returns at once (the thread cleans up in the background).
        """
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        # Closed already if an earlier stop got there first.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if join_timeout is not None:
            thread.join(timeout=join_timeout)


def _run_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Body of the loop's thread: run until stopped, then cancel leftovers and close."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        tasks = asyncio.all_tasks(loop)
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        loop.close()
