"""Running one activity task: its input decoded, the function called, the outcome as an event.

The worker and the processor's local activities both report an activity's
outcome as the ``TASK_COMPLETED`` / ``TASK_FAILED`` event that goes to the
instance; this module is the one place that makes those events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from durafka.codec.payload import decode_payload, encode_payload
from durafka.codec.records import ActivityTask
from durafka.errors import FailureDetails
from durafka.registry import FunctionDef
from durafka.runtime.history import EventKind, HistoryEvent

__all__ = ["failed_event", "run_activity", "run_activity_async"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_activity(task: ActivityTask, fdef: FunctionDef, max_payload_bytes: int) -> HistoryEvent:
    """Run a sync activity; its result (or failure) as the event to send to the instance.

    Never raises: it runs on a pool thread that must go on, so even a
    ``BaseException`` raised by user code (e.g. ``SystemExit``) becomes a
    ``TASK_FAILED`` event.
    """
    try:
        args = _arguments(task, fdef)
        return _completed(task, fdef, fdef.fn(*args), max_payload_bytes)
    except BaseException as exc:
        return failed_event(task, exc)


async def run_activity_async(
    task: ActivityTask, fdef: FunctionDef, max_payload_bytes: int
) -> HistoryEvent:
    """Run an async activity; its result (or failure) as the event to send to the instance.

    A ``BaseException`` (the loop's ``CancelledError`` at shutdown above all)
    propagates: the caller decides what a cancelled run means.
    """
    try:
        args = _arguments(task, fdef)
        return _completed(task, fdef, await fdef.fn(*args), max_payload_bytes)
    except Exception as exc:
        return failed_event(task, exc)


def _arguments(task: ActivityTask, fdef: FunctionDef) -> Sequence[Any]:
    if not fdef.takes_input:
        return ()
    return (
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
