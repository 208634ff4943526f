"""Running one activity task: its input decoded, the function called, the outcome as an event.

The worker and the processor's local activities both report an activity's
outcome as the ``TASK_COMPLETED`` / ``TASK_FAILED`` event that goes to the
instance; this module is the one place that makes those events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from durafka.activities.context import ActivityContext, activate, deactivate
from durafka.codec.payload import decode_payload, encode_payload
from durafka.codec.records import ActivityTask
from durafka.errors import FailureDetails
from durafka.registry import FunctionDef
from durafka.runtime.history import EventKind, HistoryEvent

__all__ = ["failed_event", "run_activity", "run_activity_async"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_activity(
    task: ActivityTask,
    fdef: FunctionDef,
    max_payload_bytes: int,
    ctx: ActivityContext | None = None,
) -> HistoryEvent:
    """Run a sync activity; its result (or failure) as the event to send to the instance.

    ``ctx`` is the attempt's context (made here if not given): passed to an
    activity that takes one, and :meth:`ActivityContext.current` meanwhile.

    Never raises: it runs on a pool thread that must go on, so even a
    ``BaseException`` raised by user code (e.g. ``SystemExit``) becomes a
    ``TASK_FAILED`` event.
    """
    ctx = ctx or ActivityContext(task)
    token = activate(ctx)
    try:
        args = _arguments(task, fdef, ctx)
        return _completed(task, fdef, fdef.fn(*args), max_payload_bytes)
    except BaseException as exc:
        return failed_event(task, exc)
    finally:
        deactivate(token)


async def run_activity_async(
    task: ActivityTask,
    fdef: FunctionDef,
    max_payload_bytes: int,
    ctx: ActivityContext | None = None,
) -> HistoryEvent:
    """Run an async activity; its result (or failure) as the event to send to the instance.

    ``ctx`` as for :func:`run_activity` (the variable is set in this task's own
    context, so concurrent activities each see theirs).

    A ``BaseException`` (the loop's ``CancelledError`` at shutdown above all)
    propagates: the caller decides what a cancelled run means.
    """
    ctx = ctx or ActivityContext(task)
    activate(ctx)  # in this task's own copy of the context: nothing to undo
    try:
        args = _arguments(task, fdef, ctx)
        return _completed(task, fdef, await fdef.fn(*args), max_payload_bytes)
    except Exception as exc:
        return failed_event(task, exc)


def _arguments(task: ActivityTask, fdef: FunctionDef, ctx: ActivityContext) -> Sequence[Any]:
    args: tuple[Any, ...] = (ctx,) if fdef.takes_context else ()
    if not fdef.takes_input:
        return args
    return (
        *args,
        decode_payload(task.input, fdef.input_adapter, what=f"input of activity {task.name!r}"),
    )


def _completed(
    task: ActivityTask, fdef: FunctionDef, output: Any, max_payload_bytes: int
) -> HistoryEvent:
    payload = encode_payload(
        output,
        fdef.output_adapter,
        max_bytes=max_payload_bytes,
        what=f"result of activity {task.name!r}",
    )
    return HistoryEvent(
        EventKind.TASK_COMPLETED,
        _now_ms(),
        seq=task.seq,
        attempt=task.attempt,
        payload=payload,
        execution_id=task.execution_id,
    )


def failed_event(task: ActivityTask, exc: BaseException) -> HistoryEvent:
    """The ``TASK_FAILED`` event reporting ``exc`` as the outcome of ``task``."""
    return HistoryEvent(
        EventKind.TASK_FAILED,
        _now_ms(),
        seq=task.seq,
        attempt=task.attempt,
        failure=FailureDetails.from_exception(exc),
        execution_id=task.execution_id,
    )
