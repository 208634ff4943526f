"""Planning a rewind or a reset of an instance from its history: pure, no I/O.

**Rewind** (Durable Functions' ``RewindAsync``): a Failed instance whose failure
came from an activity or a sub-orchestration goes back to Running; the failed
calls are retried, everything that succeeded is kept. The history keeps its
failures and gains an ``EXECUTION_REWOUND`` event listing the retried calls;
replay skips the failures it undid (:func:`~durafka.runtime.history.undone_events`).

Which failures to undo is decided by replaying: a failure the orchestrator
handled (caught it, retried on a timer, compensated) was followed by the calls
that handling made, so undoing it makes the replay diverge; it stays. Failures
are tried from the last one back; each one whose undoing keeps the replay
deterministic is undone (also a failure not awaited yet when another one
failed the execution: it would fail it again right after the retry), and the
plan holds when the replayed orchestrator is no longer finished.
:func:`plan_rewind` is run by the management layer before the command is sent
(so an operator gets the reason at once) and by the processor when it applies
it (the instance may have changed meanwhile).

**Reset** (Temporal's reset): a new execution that replays the history up to an
event and continues from there (:func:`plan_reset`).

Both are refused inside an entity lock or with an entity call pending at that
point: the locks were released when the execution ended (a critical section
cannot be resumed), and an entity operation must run exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from durafka.codec.payload import DEFAULT_MAX_PAYLOAD_BYTES
from durafka.errors import RewindError
from durafka.registry import Registry
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import (
    REWINDABLE_FAILURE_KINDS,
    EventKind,
    HistoryEvent,
    undone_events,
)

__all__ = ["ResetPlan", "plan_reset", "plan_rewind", "rewound_event"]


def rewound_event(timestamp: int, reason: str | None, retried: Sequence[int]) -> HistoryEvent:
    """The ``EXECUTION_REWOUND`` history event of a rewind retrying ``retried``."""
    payload = json.dumps({"reason": reason, "retried": sorted(retried)}).encode()
    return HistoryEvent(EventKind.EXECUTION_REWOUND, timestamp, payload=payload)


def _replay(
    registry: Registry,
    instance_id: str,
    history: list[HistoryEvent],
    generation: int,
    max_payload_bytes: int,
) -> OrchestrationExecutor:
    start = next((e for e in history if e.kind is EventKind.EXECUTION_STARTED), None)
    if start is None or not start.name:
        raise RewindError(
            f"instance {instance_id!r} has no start in its history (purged, or continued as "
            "new and not started yet)"
        )
    ex = OrchestrationExecutor(
        registry,
        instance_id,
        start.name,
        max_payload_bytes=max_payload_bytes,
        generation=generation,
    )
    ex.replay(history)
    return ex


def _check_entities(ex: OrchestrationExecutor, instance_id: str, where: str) -> None:
    pending = ex.pending_calls()
    if ex.lock_requested:
        raise RewindError(
            f"instance {instance_id!r} was inside a ctx.lock block {where}; its entity locks "
            "were released when the execution ended, so the critical section cannot go on: "
            "restart it, or reset it to a point before the block"
        )
    calls = sorted(s for s, k in pending.items() if k is EventKind.ENTITY_CALLED)
    if calls:
        raise RewindError(
            f"instance {instance_id!r} had entity calls pending {where} (sequence ids "
            f"{', '.join(map(str, calls))}); an entity operation runs exactly once and may "
            "already have run: reset it to a point before the call or after its response"
        )


def plan_rewind(
    registry: Registry,
    instance_id: str,
    history: list[HistoryEvent],
    *,
    generation: int = 0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[int]:
    """The sequence ids of the failed calls a rewind of this failed history retries.

    Args:
        registry: the code the instance runs.
        instance_id: the instance (for messages and ``ctx.instance_id``).
        history: its current generation's history (ending with its failure).
        generation: its ``continue_as_new`` generation.
        max_payload_bytes: the app's payload limit.

    Raises:
        RewindError: it did not fail, or failed in its own code rather than in an
            activity or a sub-orchestration, or undoing the failures does not make
            it run again, or it failed inside an entity lock or with an entity call
            pending.
    """
    undone = undone_events(history)
    failed_at = next(
        (
            i
            for i in range(len(history) - 1, -1, -1)
            if history[i].kind is EventKind.EXECUTION_FAILED and i not in undone
        ),
        None,
    )
    if failed_at is None:
        raise RewindError(f"instance {instance_id!r} has not failed: there is nothing to rewind")
    failure = history[failed_at].failure
    why = f"{failure.error_type}: {failure.message}" if failure is not None else "unknown"
    candidates = [
        (i, e.seq)
        for i, e in enumerate(history[:failed_at])
        if e.kind in REWINDABLE_FAILURE_KINDS and i not in undone
    ]
    if not candidates:
        raise RewindError(
            f"instance {instance_id!r} failed in its own code ({why}), not in an activity or "
            "a sub-orchestration: a rewind would fail the same way. Fix the code, then "
            "restart it or reset it to an earlier event"
        )
    retried: list[int] = []
    ex: OrchestrationExecutor | None = None
    for index, seq in reversed(candidates):
        trial = [*history, rewound_event(0, None, [*retried, seq])]
        attempt = _replay(registry, instance_id, trial, generation, max_payload_bytes)
        if attempt.divergence is None:
            retried.append(seq)
            ex = attempt
        elif _inside_lock(history, index):
            # The failure left the block, whose exit released the locks: the replay
            # diverges there, and the critical section cannot be resumed.
            raise RewindError(
                f"instance {instance_id!r} failed inside a ctx.lock block; its entity locks "
                "were released when the failure left the block, so the critical section "
                "cannot go on: restart it, or reset it to a point before the block"
            )
    if ex is None or ex.is_complete:
        raise RewindError(
            f"instance {instance_id!r} cannot be rewound: retrying its failed calls does not "
            f"undo its failure ({why}); the orchestrator handled those failures and failed "
            "afterwards in its own code"
        )
    _check_entities(ex, instance_id, "when it failed")
    return sorted(retried)


def _inside_lock(history: list[HistoryEvent], index: int) -> bool:
    """Whether event ``index`` arrived inside a ``ctx.lock`` block (requested, not released)."""
    inside = False
    for e in history[:index]:
        if e.kind is EventKind.LOCK_REQUESTED:
            inside = True
        elif e.kind is EventKind.LOCK_RELEASED:
            inside = False
    return inside


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """What a reset keeps and applies again.

    Attributes:
        prefix: the history events before the reset point (the new execution replays them).
        reapplied: external events raised after the point, delivered again to the new
            execution (as Temporal's reset re-applies signals).
        dropped: how many events after the point the new execution does not keep.
    """

    prefix: list[HistoryEvent]
    reapplied: list[HistoryEvent]
    dropped: int


def plan_reset(
    registry: Registry,
    instance_id: str,
    history: list[HistoryEvent],
    to_event: int,
    *,
    generation: int = 0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> ResetPlan:
    """The plan of a reset of ``history`` to event index ``to_event``.

    The new execution keeps events ``[0, to_event)`` (the index ``durafka history``
    shows in its ``#`` column) and goes on from there with the current code.

    Raises:
        RewindError: ``to_event`` is not inside the history (it must keep the start
            and leave the execution unfinished), the current code diverges from
            the kept prefix, or the point is inside an entity lock or has an entity
            call pending.
    """
    start_at = next(
        (i for i, e in enumerate(history) if e.kind is EventKind.EXECUTION_STARTED), None
    )
    if start_at is None:
        raise RewindError(f"instance {instance_id!r} has no history to reset (purged?)")
    if not start_at < to_event <= len(history):
        raise RewindError(
            f"cannot reset instance {instance_id!r} to event {to_event}: choose an index from "
            f"{start_at + 1} (right after its start) to {len(history)} (see `durafka history`)"
        )
    prefix = history[:to_event]
    ex = _replay(registry, instance_id, prefix, generation, max_payload_bytes)
    if ex.divergence is not None:
        raise RewindError(
            f"cannot reset instance {instance_id!r} to event {to_event}: the current code "
            f"does not replay the events before it: {ex.divergence}"
        )
    if ex.is_complete:
        raise RewindError(
            f"cannot reset instance {instance_id!r} to event {to_event}: the execution has "
            "ended before that point; choose an earlier event"
        )
    _check_entities(ex, instance_id, f"at event {to_event}")
    rest = history[to_event:]
    return ResetPlan(
        prefix=prefix,
        reapplied=[e for e in rest if e.kind is EventKind.EVENT_RAISED],
        dropped=len(rest),
    )
