"""An instance's history as a timeline: what it waited for, and for how long.

Every call an orchestration makes takes a sequence id, and its answer carries
the same one (see docs/architecture.md, "The replay engine"): a span runs from
the request's event to its answer's. Retries are separate calls (one span per
attempt); a timer that was cancelled, or anything the instance still waits
for, stays ``pending``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from durafka.management.models import TimelineSpan
from durafka.runtime.history import EventKind, HistoryEvent

__all__ = ["timeline"]

_Kind = Literal["activity", "timer", "sub_orchestration", "entity", "lock", "event"]

_REQUESTS: dict[EventKind, _Kind] = {
    EventKind.TASK_SCHEDULED: "activity",
    EventKind.TIMER_CREATED: "timer",
    EventKind.SUB_ORCHESTRATION_CREATED: "sub_orchestration",
    EventKind.ENTITY_CALLED: "entity",
    EventKind.LOCK_REQUESTED: "lock",
}

_ANSWERS: dict[EventKind, tuple[_Kind, bool]] = {
    EventKind.TASK_COMPLETED: ("activity", False),
    EventKind.TASK_FAILED: ("activity", True),
    EventKind.TIMER_FIRED: ("timer", False),
    EventKind.SUB_ORCHESTRATION_COMPLETED: ("sub_orchestration", False),
    EventKind.SUB_ORCHESTRATION_FAILED: ("sub_orchestration", True),
    EventKind.ENTITY_RESPONSE: ("entity", False),
    EventKind.LOCK_GRANTED: ("lock", False),
}


def timeline(history: Sequence[HistoryEvent]) -> list[TimelineSpan]:
    """The spans of ``history`` (one generation), in the order they started."""
    spans: list[TimelineSpan] = []
    open_spans: dict[tuple[_Kind, int], int] = {}
    for event in history:
        kind = _REQUESTS.get(event.kind)
        if kind is not None:
            open_spans[(kind, event.seq)] = len(spans)
            spans.append(
                TimelineSpan(
                    kind=kind,
                    name=event.name,
                    seq=event.seq,
                    target=event.instance_id if kind != "lock" else None,
                    start_ms=event.timestamp,
                    outcome="pending",
                )
            )
            continue
        answer = _ANSWERS.get(event.kind)
        if answer is not None:
            answered, failed = answer
            index = open_spans.pop((answered, event.seq), None)
            if index is None:
                continue  # an answer to nothing this generation asked (a duplicate)
            span = spans[index]
            span.end_ms = max(event.timestamp, span.start_ms)
            span.duration_ms = span.end_ms - span.start_ms
            span.outcome = "failed" if failed or event.failure is not None else "completed"
            continue
        if event.kind is EventKind.EVENT_RAISED:
            spans.append(
                TimelineSpan(
                    kind="event",
                    name=event.name,
                    start_ms=event.timestamp,
                    end_ms=event.timestamp,
                    duration_ms=0,
                    outcome="completed",
                )
            )
    return spans
