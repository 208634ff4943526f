"""The activity context: what a running activity knows about itself, and its heartbeat.

An activity gets it in one of two ways, neither of which changes the accepted
signatures ``(input)`` and ``()``:

* a first parameter annotated :class:`ActivityContext`:
  ``def transcode(ctx: ActivityContext, video: Video) -> str``;
* :meth:`ActivityContext.current` from anywhere the activity calls (a
  ``contextvars`` variable: per thread for ``def`` activities, per task for
  ``async def`` ones), as Temporal's ``activity.heartbeat()``.

``ctx.heartbeat(details)`` only records the time and the details: the worker
sends them to the orchestration's processor, at most every half heartbeat
timeout (see :mod:`durafka.activities.worker`), so calling it in a tight loop
costs nothing more than an assignment.
"""

from __future__ import annotations

import contextvars
import time
from datetime import timedelta
from typing import Any

from durafka.codec.payload import encode_payload
from durafka.codec.records import ActivityTask
from durafka.errors import DurafkaError

__all__ = ["HEARTBEAT_DETAILS_MAX_BYTES", "ActivityContext", "activate", "deactivate"]

#: The JSON of one heartbeat's details is at most this large (it travels on every heartbeat).
HEARTBEAT_DETAILS_MAX_BYTES = 4096

_CURRENT: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("durafka_activity")


class ActivityContext:
    """The running attempt of an activity (``ctx``), and its heartbeat.

    Example:
        >>> @app.activity
        ... def transcode(ctx: durafka.ActivityContext, video: Video) -> str:
        ...     for n, chunk in enumerate(video.chunks):
        ...         encode(chunk)
        ...         ctx.heartbeat({"chunk": n})  # progress: the call is not hung
        ...     return video.name
        >>> await ctx.call_activity(transcode, video, heartbeat_timeout=timedelta(seconds=30))

    Attributes:
        instance_id: the orchestration instance that called the activity.
        name: the activity's registered name.
        seq: the sequence id of the call in the orchestration.
        attempt: the retry policy's attempt number (1 for the first).
        delivery: how many times this attempt was delivered to a worker before,
            without a result (0 normally; see ``max_activity_deliveries``).
        heartbeat_timeout: the call's heartbeat timeout (None: the call set none,
            and heartbeats go nowhere).
    """

    __slots__ = (
        "_beats",
        "_details",
        "_last_beat",
        "attempt",
        "delivery",
        "heartbeat_timeout",
        "instance_id",
        "name",
        "seq",
    )

    def __init__(self, task: ActivityTask, *, delivery: int = 0) -> None:
        self.instance_id = task.instance_id
        self.name = task.name
        self.seq = task.seq
        self.attempt = task.attempt
        self.delivery = delivery
        ms = task.heartbeat_timeout_ms
        self.heartbeat_timeout = None if ms is None else timedelta(milliseconds=ms)
        self._beats = 0
        self._details: bytes | None = None
        self._last_beat = time.monotonic()

    def heartbeat(self, details: Any = None) -> None:
        """Report that the activity is alive (and, optionally, how far it got).

        With a ``heartbeat_timeout`` on the call, an activity that does not call
        this within the timeout is failed by the orchestration with
        :class:`~durafka.ActivityTimeoutError` (and retried under its retry
        policy). ``details`` (JSON-serialisable, at most 4 KiB of JSON) appear
        in that error's message.

        Raises:
            PayloadTooLargeError: ``details`` is larger than 4 KiB as JSON.
            SerializationError: ``details`` is not JSON-serialisable.
        """
        if details is not None:
            self._details = encode_payload(
                details,
                None,
                max_bytes=HEARTBEAT_DETAILS_MAX_BYTES,
                what=f"heartbeat details of activity {self.name!r}",
            )
        self._last_beat = time.monotonic()
        self._beats += 1

    @property
    def beats(self) -> int:
        """How many times :meth:`heartbeat` was called."""
        return self._beats

    @property
    def last_heartbeat(self) -> float:
        """``time.monotonic()`` of the last heartbeat (the start before the first)."""
        return self._last_beat

    @property
    def details(self) -> bytes | None:
        """The JSON of the last details given to :meth:`heartbeat`."""
        return self._details

    @staticmethod
    def current() -> ActivityContext:
        """The context of the activity running in this thread (or asyncio task).

        Raises:
            DurafkaError: called outside a running activity.
        """
        ctx = _CURRENT.get(None)
        if ctx is None:
            raise DurafkaError(
                "ActivityContext.current() was called outside a running activity "
                "(or in a thread the activity started itself: pass ctx to it)"
            )
        return ctx


def activate(ctx: ActivityContext) -> contextvars.Token[ActivityContext]:
    """Make ``ctx`` what :meth:`ActivityContext.current` returns in this thread or task."""
    return _CURRENT.set(ctx)


def deactivate(token: contextvars.Token[ActivityContext]) -> None:
    """Undo :func:`activate` (the activity returned)."""
    _CURRENT.reset(token)
