"""History events: the append-only record of everything an orchestration did.

One flat event type (``HistoryEvent``) with a ``kind`` and the fields that kind
uses keeps the Avro schema small, fast to encode and easy to evolve. The same
event travels on ``H.orchestrations`` (wrapped in a message with the target
instance id) and is appended to the instance's history when applied.

Fields by kind (``seq`` is the sequence id the orchestrator's call took):

=========================== ==========================================================
kind                        fields
=========================== ==========================================================
EXECUTION_STARTED           name, version, payload=input, execution_id, id_reuse_policy,
                            instance_id=parent id, seq=parent seq, parent_execution_id
ORCHESTRATOR_STARTED        timestamp (the time ``ctx.now()`` returns for this step)
TASK_SCHEDULED              seq, name, payload=input, fire_at=the attempt's timeout (its
                            deadline), heartbeat_timeout_ms
TASK_COMPLETED              seq, attempt, payload=result, execution_id
TASK_FAILED                 seq, attempt, failure, execution_id
TASK_HEARTBEAT              (worker to processor, never in a history) seq, attempt,
                            name, payload=details, execution_id, heartbeat_timeout_ms
TIMER_CREATED               seq, fire_at
TIMER_FIRED                 seq, fire_at, execution_id
SUB_ORCHESTRATION_CREATED   seq, name, instance_id=child id, payload=input
SUB_ORCHESTRATION_COMPLETED seq, payload=result, execution_id
SUB_ORCHESTRATION_FAILED    seq, failure, execution_id
EVENT_RAISED                name, payload=data
EVENT_SENT                  seq, name, instance_id=target, payload=data
EXECUTION_COMPLETED         payload=output
EXECUTION_FAILED            failure
EXECUTION_TERMINATED        payload=reason (JSON string)
CONTINUED_AS_NEW            payload=new input
EXECUTION_SUSPENDED         payload=reason
EXECUTION_RESUMED           payload=reason
EXECUTION_PURGED            (a command: delete a finished instance's state and status)
ENTITY_CALLED               seq, name=operation, instance_id=entity id, payload=input
ENTITY_SIGNALED             seq, name=operation, instance_id=entity id, payload=input
ENTITY_OPERATION            (to an entity) name=operation, payload=input,
                            instance_id=caller (None: a signal from outside an
                            orchestration), seq=caller's seq (-1: no response wanted)
ENTITY_RESPONSE             seq, payload=result or failure, instance_id=entity id
LOCK_REQUESTED              seq, payload=JSON list of the sorted entity ids; the same kind
                            travels entity to entity with instance_id=orchestration
LOCK_GRANTED                seq, instance_id=the last entity locked
MARKER_RECORDED             seq, name=patch id (ctx.patched: the execution took the patched
                            branch; replayed histories without it take the old one)
LOCK_RELEASED               seq, payload=JSON list of the entity ids; to an entity:
                            instance_id=orchestration, payload=the ids when the release
                            must follow the request's path (lock not known to be granted)
EXECUTION_REWOUND           a command: payload=reason (JSON string); to a child from its
                            rewound or reset parent: instance_id=parent, seq=parent seq,
                            parent_execution_id=the parent's new token. In a history:
                            payload={"reason": ..., "retried": [seq, ...]}: the failures of
                            those calls before it (and the execution's failure) are undone
EXECUTION_RESET             a command: seq=the event index to reset to, execution_id=the
                            new execution, payload=reason; in a history: the point where
                            the new execution took over the replayed prefix
=========================== ==========================================================

Entity ids are ``@<name>@<key>`` (see :class:`durafka.entities.EntityId`); they share
``H.orchestrations`` with orchestrations, so the processor tells them apart by the ``@``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from durafka.errors import FailureDetails
from durafka.status import RuntimeStatus


class EventKind(StrEnum):
    """What a history event records."""

    EXECUTION_STARTED = "EXECUTION_STARTED"
    ORCHESTRATOR_STARTED = "ORCHESTRATOR_STARTED"
    TASK_SCHEDULED = "TASK_SCHEDULED"
    TASK_COMPLETED = "TASK_COMPLETED"
    TASK_FAILED = "TASK_FAILED"
    TIMER_CREATED = "TIMER_CREATED"
    TIMER_FIRED = "TIMER_FIRED"
    SUB_ORCHESTRATION_CREATED = "SUB_ORCHESTRATION_CREATED"
    SUB_ORCHESTRATION_COMPLETED = "SUB_ORCHESTRATION_COMPLETED"
    SUB_ORCHESTRATION_FAILED = "SUB_ORCHESTRATION_FAILED"
    EVENT_RAISED = "EVENT_RAISED"
    EVENT_SENT = "EVENT_SENT"
    EXECUTION_COMPLETED = "EXECUTION_COMPLETED"
    EXECUTION_FAILED = "EXECUTION_FAILED"
    EXECUTION_TERMINATED = "EXECUTION_TERMINATED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    EXECUTION_SUSPENDED = "EXECUTION_SUSPENDED"
    EXECUTION_RESUMED = "EXECUTION_RESUMED"
    EXECUTION_PURGED = "EXECUTION_PURGED"
    ENTITY_OPERATION = "ENTITY_OPERATION"
    ENTITY_RESPONSE = "ENTITY_RESPONSE"
    ENTITY_CALLED = "ENTITY_CALLED"
    ENTITY_SIGNALED = "ENTITY_SIGNALED"
    LOCK_REQUESTED = "LOCK_REQUESTED"
    LOCK_GRANTED = "LOCK_GRANTED"
    LOCK_RELEASED = "LOCK_RELEASED"
    MARKER_RECORDED = "MARKER_RECORDED"
    EXECUTION_REWOUND = "EXECUTION_REWOUND"
    EXECUTION_RESET = "EXECUTION_RESET"
    TASK_HEARTBEAT = "TASK_HEARTBEAT"


#: Kinds that answer a call the orchestrator made (they carry its ``seq``).
COMPLETION_KINDS = frozenset(
    {
        EventKind.TASK_COMPLETED,
        EventKind.TASK_FAILED,
        EventKind.TIMER_FIRED,
        EventKind.SUB_ORCHESTRATION_COMPLETED,
        EventKind.SUB_ORCHESTRATION_FAILED,
        EventKind.ENTITY_RESPONSE,
        EventKind.LOCK_GRANTED,
    }
)

#: Kinds an orchestration instance takes as messages on ``H.orchestrations`` (the
#: processor dead-letters the others: an action kind, an entity message, ...).
ORCHESTRATION_MESSAGE_KINDS = COMPLETION_KINDS | frozenset(
    {
        EventKind.EXECUTION_STARTED,
        EventKind.EXECUTION_TERMINATED,
        EventKind.EXECUTION_SUSPENDED,
        EventKind.EXECUTION_RESUMED,
        EventKind.EXECUTION_PURGED,
        EventKind.EVENT_RAISED,
        EventKind.EXECUTION_REWOUND,
        EventKind.EXECUTION_RESET,
    }
)

#: Kinds an entity takes as messages (operations and the lock protocol).
ENTITY_MESSAGE_KINDS = frozenset(
    {EventKind.ENTITY_OPERATION, EventKind.LOCK_REQUESTED, EventKind.LOCK_RELEASED}
)

#: Kinds recording an action the orchestrator took (matched on replay).
ACTION_KINDS = frozenset(
    {
        EventKind.TASK_SCHEDULED,
        EventKind.TIMER_CREATED,
        EventKind.SUB_ORCHESTRATION_CREATED,
        EventKind.EVENT_SENT,
        EventKind.ENTITY_CALLED,
        EventKind.ENTITY_SIGNALED,
        EventKind.LOCK_REQUESTED,
        EventKind.LOCK_RELEASED,
        EventKind.MARKER_RECORDED,
    }
)

#: Actions the processor turns into messages to entities.
ENTITY_ACTION_KINDS = frozenset(
    {
        EventKind.ENTITY_CALLED,
        EventKind.ENTITY_SIGNALED,
        EventKind.LOCK_REQUESTED,
        EventKind.LOCK_RELEASED,
    }
)


class IdReusePolicy(StrEnum):
    """What a start does when the instance id's last execution has finished.

    Start records arrive through at-least-once producers (a service retrying an
    ambiguous produce, a client retrying a timeout), so durafka is idempotent by
    default: a start for a finished id is ignored and the client gets the existing
    execution. The same start delivered twice (same ``execution_id``) is always
    ignored. A start for a running or suspended id is always refused.
    """

    REJECT_DUPLICATE = "REJECT_DUPLICATE"
    """Ignore the start (the default)."""
    ALLOW_DUPLICATE_FAILED_ONLY = "ALLOW_DUPLICATE_FAILED_ONLY"
    """Start a new execution if the last one failed or was terminated."""
    ALLOW_DUPLICATE = "ALLOW_DUPLICATE"
    """Start a new execution whatever the last one ended with."""


def reuse_allowed(policy: IdReusePolicy, last: RuntimeStatus) -> bool:
    """Whether a start with ``policy`` begins a new execution of an id whose last ended ``last``."""
    if policy is IdReusePolicy.ALLOW_DUPLICATE:
        return True
    if policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY:
        return last in (RuntimeStatus.FAILED, RuntimeStatus.TERMINATED)
    return False


@dataclass(slots=True)
class HistoryEvent:
    """One event of an instance's history (see the module docstring for the fields per kind).

    Attributes:
        kind: what happened.
        timestamp: when it was recorded, milliseconds since the Unix epoch.
        seq: sequence id of the orchestrator call it belongs to, -1 if none.
        name: activity, orchestration, timer or event name.
        payload: JSON bytes (input, result, event data, reason).
        failure: why a task or the execution failed.
        instance_id: the other instance involved (child, target or parent).
        fire_at: a timer's due time, ms since the epoch.
        attempt: the attempt number of an activity result (1-based, 0 if n/a).
        execution_id: EXECUTION_STARTED: the execution it starts; completions and the
            requests they answer: the execution (and generation) waiting for them.
        parent_execution_id: a sub-orchestration's start: the parent execution.
        id_reuse_policy: a start: what to do if the id's last execution finished.
        version: a start: the version of the orchestration's code it runs.
        heartbeat_timeout_ms: an activity call's (and its heartbeats') heartbeat timeout.
    """

    kind: EventKind
    timestamp: int
    seq: int = -1
    name: str | None = None
    payload: bytes | None = None
    failure: FailureDetails | None = None
    instance_id: str | None = None
    fire_at: int | None = None
    attempt: int = 0
    execution_id: str | None = None
    parent_execution_id: str | None = None
    id_reuse_policy: IdReusePolicy = IdReusePolicy.REJECT_DUPLICATE
    version: str | None = None
    heartbeat_timeout_ms: int | None = None


#: Completions a rewind can undo (the call is retried).
REWINDABLE_FAILURE_KINDS = frozenset({EventKind.TASK_FAILED, EventKind.SUB_ORCHESTRATION_FAILED})


def rewound_seqs(event: HistoryEvent) -> list[int]:
    """The sequence ids an ``EXECUTION_REWOUND`` history event retries."""
    try:
        data = json.loads(event.payload or b"{}")
    except ValueError:
        return []
    retried = data.get("retried") if isinstance(data, dict) else None
    return [s for s in retried if isinstance(s, int)] if isinstance(retried, list) else []


def count_rewinds(history: Sequence[HistoryEvent]) -> int:
    """How many times the execution of ``history`` was rewound (part of its execution token)."""
    return sum(1 for e in history if e.kind is EventKind.EXECUTION_REWOUND)


def undone_events(history: Sequence[HistoryEvent]) -> set[int]:
    """The indexes of the events of ``history`` that a rewind undid (replay skips them).

    Each ``EXECUTION_REWOUND`` undoes, before it, the last failure of each call it
    retries that no earlier rewind undid, and the execution's last failure
    (``EXECUTION_FAILED``). A call that fails again after a rewind is undone by
    the next rewind, so rewinds of rewinds replay too.
    """
    undone: set[int] = set()
    for j, e in enumerate(history):
        if e.kind is not EventKind.EXECUTION_REWOUND:
            continue
        for seq in rewound_seqs(e):
            for i in range(j - 1, -1, -1):
                f = history[i]
                if f.seq == seq and f.kind in REWINDABLE_FAILURE_KINDS and i not in undone:
                    undone.add(i)
                    break
        for i in range(j - 1, -1, -1):
            if history[i].kind is EventKind.EXECUTION_FAILED and i not in undone:
                undone.add(i)
                break
    return undone
