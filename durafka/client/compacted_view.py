"""A compacted topic materialised into a dict of latest values by key, with waiters.

A compacted topic keyed by id yields, read from the beginning, the latest value
of every key; a ``None`` value (a tombstone) removes the key. A feeder
(:class:`~durafka.transport.feeder.ThreadFeeder` or
:class:`~durafka.transport.aiokafka.AioKafkaFeeder`) reads the topic in
the background, hands batches to :meth:`CompactedView.apply` and marks the view
*ready* once it has caught up with the high watermarks captured at its start.
:class:`~durafka.client.status_view.StatusView` (``H.status``) and
:class:`~durafka.client.entity_view.EntityView` (``H.entities``) are its two
kinds; a subclass only says how to decode a value and how to name itself.

Waiting never polls: sync waiters sleep on a ``threading.Condition`` that every
applied batch notifies; async waiters are futures resolved through
``loop.call_soon_threadsafe`` by whichever thread applied the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from durafka.errors import DurafkaError, WaitTimeoutError

__all__ = ["CompactedView"]

V = TypeVar("V")

_READY = "<ready>"  # waiter key of wait-for-ready futures (no topic key looks like it)


@dataclass(eq=False, slots=True)
class _AsyncWaiter(Generic[V]):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    predicate: Callable[[V], bool] | None = field(default=None)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _schedule(
    waiter: _AsyncWaiter[Any], fn: Callable[[asyncio.Future[Any], Any], None], arg: Any
) -> None:
    # The waiter's loop may have closed while it waited (its task is gone): nothing to wake.
    with contextlib.suppress(RuntimeError):
        waiter.loop.call_soon_threadsafe(fn, waiter.future, arg)


_Wakeup = tuple[Callable[[asyncio.Future[Any], Any], None], asyncio.Future[Any], Any]


def _run_wakeups(wakeups: list[_Wakeup]) -> None:
    for fn, future, arg in wakeups:
        fn(future, arg)


def _dispatch(by_loop: dict[asyncio.AbstractEventLoop, list[_Wakeup]]) -> None:
    """Resolve a batch's futures: one call per event loop, not one thread hop per waiter.

    ``call_soon_threadsafe`` writes to the loop's self-pipe each time; for a batch
    of hundreds of statuses that was a system call per waiter. On the loop's own
    thread (the aiokafka feeder) the futures are resolved right away.
    """
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    for loop, wakeups in by_loop.items():
        if loop is current:
            _run_wakeups(wakeups)
            continue
        with contextlib.suppress(RuntimeError):  # that loop closed: nothing to wake
            loop.call_soon_threadsafe(_run_wakeups, wakeups)


class CompactedView(ABC, Generic[V]):
    """The latest value of every key of a compacted topic, fed by a feeder.

    Thread-safe: feeders apply batches from their thread or task while any
    number of threads and event loops read and wait. Async waiters on a key
    (:meth:`_add_waiter` with a predicate) are resolved by the batch that makes
    their predicate hold.
    """

    #: Names a record in log messages and its topic in errors ("status", "entities").
    _record_noun: ClassVar[str]
    _topic_noun: ClassVar[str]
    #: The subclass module's logger, so log records keep their origin.
    _log: ClassVar[logging.Logger]

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._values: dict[str, V] = {}
        self._waiters: dict[str, list[_AsyncWaiter[V]]] = {}
        self._ready = False
        self._error: DurafkaError | None = None
        self._listeners: list[Callable[[list[str]], None]] = []

    @abstractmethod
    def _decode(self, value: bytes) -> V:
        """The value of a record (raises on anything not written by durafka)."""

    # -- feeding -------------------------------------------------------------------

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Apply ``(key, value)`` records of the topic in topic order (None: removed)."""
        noun = self._record_noun
        updates: list[tuple[str, V | None]] = []
        for key, value in records:
            if key is None:
                article = "an" if noun[0] in "aeiou" else "a"
                self._log.warning(
                    "skipping %s %s record without a key (not written by durafka)", article, noun
                )
                continue
            try:
                updates.append((key.decode(), None if value is None else self._decode(value)))
            except Exception as exc:  # any writer's garbage: one bad record must not stop the view
                self._log.warning("skipping an undecodable %s record (key %r): %s", noun, key, exc)
        if not updates:
            return
        wakeups: dict[asyncio.AbstractEventLoop, list[_Wakeup]] = {}
        with self._cond:
            for key_str, decoded in updates:
                if decoded is None:
                    old = self._values.pop(key_str, None)
                else:
                    old = self._values.get(key_str)
                    self._values[key_str] = decoded
                self._changed(old, decoded)
                if decoded is not None and key_str in self._waiters:
                    self._wake(key_str, decoded, wakeups)
            self._cond.notify_all()
            listeners = list(self._listeners)
        if wakeups:
            _dispatch(wakeups)
        if listeners:
            keys = [key for key, _ in updates]
            for listener in listeners:
                try:
                    listener(keys)
                except Exception:  # a listener's bug must not stop the view
                    self._log.exception("a %s view listener failed", self._record_noun)

    def _changed(self, old: V | None, new: V | None) -> None:
        """A key's value went from ``old`` to ``new`` (None: absent); called under the lock."""

    def add_listener(self, listener: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``listener(keys)`` after every applied batch, with the keys it changed.

        It runs on the feeder's thread (or task), after the batch is visible: it
        must return quickly (hand the keys over to a queue or an event loop).

        Returns:
            A function that removes the listener.
        """
        with self._cond:
            self._listeners.append(listener)

        def remove() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _wake(
        self, key: str, value: V, wakeups: dict[asyncio.AbstractEventLoop, list[_Wakeup]]
    ) -> None:
        """Collect the wake-ups of the async waiters on ``key`` whose predicate holds."""
        keep: list[_AsyncWaiter[V]] = []
        for waiter in self._waiters[key]:
            assert waiter.predicate is not None
            try:
                matched = waiter.predicate(value)
            except Exception as exc:  # the waiter's own bug: surface it to the waiter
                wakeups.setdefault(waiter.loop, []).append((_reject, waiter.future, exc))
                continue
            if matched:
                wakeups.setdefault(waiter.loop, []).append((_resolve, waiter.future, value))
            else:
                keep.append(waiter)
        if keep:
            self._waiters[key] = keep
        else:
            del self._waiters[key]

    def mark_ready(self) -> None:
        """Called by the feeder once it has caught up with the start-time high watermarks."""
        with self._cond:
            if self._ready:
                return
            self._ready = True
            for waiter in self._waiters.pop(_READY, []):
                _schedule(waiter, _resolve, None)
            self._cond.notify_all()

    def fail(self, error: DurafkaError) -> None:
        """Stop the view: every current and future wait raises ``error``.

        Called by the feeder when it cannot go on, and by the client on close.
        The values already seen stay readable.
        """
        with self._cond:
            if self._error is not None:
                return
            self._error = error
            for waiters in self._waiters.values():
                for waiter in waiters:
                    _schedule(waiter, _reject, error)
            self._waiters.clear()
            self._cond.notify_all()

    # -- reading -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the view has caught up with its topic as of its start."""
        return self._ready

    def _get(self, key: str) -> V | None:
        with self._cond:
            return self._values.get(key)

    def _all(self) -> list[V]:
        with self._cond:
            return list(self._values.values())

    def __len__(self) -> int:
        with self._cond:
            return len(self._values)

    # -- waiting -------------------------------------------------------------------

    def wait_ready(self, timeout: float | None) -> None:
        """Block until the view is ready.

        Raises:
            WaitTimeoutError: not caught up within ``timeout`` seconds.
            DurafkaError: the feeder failed (the view's error).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                self._raise_error()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(self._not_ready_message(timeout))
                self._cond.wait(remaining)

    async def wait_ready_async(self, timeout: float | None) -> None:
        """:meth:`wait_ready` for asyncio: the feeder resolves a future, nothing polls."""
        with self._cond:
            if self._ready:
                return
            self._raise_error()
            waiter = self._add_waiter(_READY, None)
        await self._await(waiter, _READY, timeout, lambda: self._not_ready_message(timeout))

    def _add_waiter(self, key: str, predicate: Callable[[V], bool] | None) -> _AsyncWaiter[V]:
        """Register an async waiter on ``key`` (lock held); resolved by :meth:`_wake`."""
        loop = asyncio.get_running_loop()
        waiter: _AsyncWaiter[V] = _AsyncWaiter(loop, loop.create_future(), predicate)
        self._waiters.setdefault(key, []).append(waiter)
        return waiter

    async def _await(
        self,
        waiter: _AsyncWaiter[V],
        key: str,
        timeout: float | None,
        message: Callable[[], str],
    ) -> Any:
        """Await ``waiter`` for at most ``timeout`` seconds, then drop it from the waiters."""
        try:
            if timeout is None:
                return await waiter.future  # no task per wait (asyncio.wait makes one)
            done, _ = await asyncio.wait((waiter.future,), timeout=timeout)
            if not done:
                raise WaitTimeoutError(message())
            return waiter.future.result()
        finally:
            with self._cond:
                waiters = self._waiters.get(key)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[key]
            waiter.future.cancel()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _not_ready_message(self, timeout: float | None) -> str:
        return (
            f"the {self._record_noun} view did not catch up with the {self._topic_noun} topic "
            f"within {timeout}s; is the broker reachable and the topic readable?"
        )
