"""What management operations return: one JSON shape for the CLI's ``--json`` and the HTTP API.

Pydantic models, so the HTTP API's OpenAPI schema is generated from the very
types the CLI prints (``model_dump(mode="json")``). Payloads (inputs, outputs,
event data, custom status, entity state) are shown as the plain JSON values
they were written as; a payload that is not JSON (written by another service)
is shown as ``{"$undecodable": "<text>"}`` rather than failing the whole page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from durafka.errors import FailureDetails
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import OrchestrationStatus, RuntimeStatus

__all__ = [
    "ClusterInfo",
    "DeadLetterInfo",
    "DeadLetterPage",
    "EntityInfo",
    "EntityPage",
    "Failure",
    "HistoryEntry",
    "InstanceAt",
    "InstanceDetail",
    "InstancePage",
    "InstancePageView",
    "InstanceSummary",
    "PartitionInfo",
    "QuarantinedInstance",
    "RedriveOutcome",
    "ReplayCheckReport",
    "ReplayFailure",
    "ReplayFailureGroup",
    "StatusCounts",
    "TimelineSpan",
    "TopicInfo",
    "TopologyReport",
    "iso",
    "json_payload",
]


def json_payload(data: bytes | None) -> Any:
    """A payload as plain JSON values (None stays None; non-JSON bytes are marked, not raised)."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {"$undecodable": data.decode("utf-8", errors="replace")}


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as an ISO 8601 UTC time (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class Failure(BaseModel):
    """Why an instance, a task or an entity operation failed."""

    error_type: str
    message: str
    stack_trace: str | None = None

    @classmethod
    def of(cls, details: FailureDetails | None) -> Failure | None:
        """The model of ``details`` (None stays None)."""
        if details is None:
            return None
        return cls(
            error_type=details.error_type, message=details.message, stack_trace=details.stack_trace
        )


class InstanceSummary(BaseModel):
    """One instance in a list: what a row shows, without its payloads."""

    instance_id: str
    name: str
    status: RuntimeStatus
    created_at: str
    last_updated_at: str
    created_at_ms: int
    last_updated_at_ms: int
    parent_instance_id: str | None = None
    execution_id: str | None = None

    @classmethod
    def of(cls, status: OrchestrationStatus) -> InstanceSummary:
        """The summary of a status."""
        return cls(
            instance_id=status.instance_id,
            name=status.name,
            status=status.runtime_status,
            created_at=iso(status.created_at_ms) or "",
            last_updated_at=iso(status.last_updated_at_ms) or "",
            created_at_ms=status.created_at_ms,
            last_updated_at_ms=status.last_updated_at_ms,
            parent_instance_id=status.parent_instance_id,
            execution_id=status.execution_id,
        )


class InstanceDetail(InstanceSummary):
    """One instance with its payloads and failure."""

    input: Any = None
    output: Any = None
    custom_status: Any = None
    failure: Failure | None = None

    @classmethod
    def of(cls, status: OrchestrationStatus) -> InstanceDetail:
        """The detail of a status."""
        return cls(
            **InstanceSummary.of(status).model_dump(),
            input=json_payload(status.serialized_input),
            output=json_payload(status.serialized_output),
            custom_status=json_payload(status.serialized_custom_status),
            failure=Failure.of(status.failure_details),
        )


class InstancePage(BaseModel):
    """One page of instances and the token of the next (None: this was the last)."""

    items: list[InstanceSummary]
    continuation: str | None = None


class StatusCounts(BaseModel):
    """How many instances are in each runtime status (of one orchestration, if named)."""

    name: str | None = None
    total: int
    counts: dict[RuntimeStatus, int]


class HistoryEntry(BaseModel):
    """One history event, its payload as JSON."""

    kind: EventKind
    timestamp: str
    timestamp_ms: int
    seq: int = -1
    name: str | None = None
    payload: Any = None
    failure: Failure | None = None
    instance_id: str | None = None
    fire_at: str | None = None
    attempt: int = 0
    execution_id: str | None = None

    @classmethod
    def of(cls, event: HistoryEvent) -> HistoryEntry:
        """The entry of a history event."""
        return cls(
            kind=event.kind,
            timestamp=iso(event.timestamp) or "",
            timestamp_ms=event.timestamp,
            seq=event.seq,
            name=event.name,
            payload=json_payload(event.payload),
            failure=Failure.of(event.failure),
            instance_id=event.instance_id,
            fire_at=iso(event.fire_at),
            attempt=event.attempt,
            execution_id=event.execution_id,
        )


class TimelineSpan(BaseModel):
    """Something an orchestration waited for, from its request to its answer.

    Attributes:
        kind: activity, timer, sub_orchestration, entity, lock or event.
        name: the activity, orchestration, entity operation or event name.
        seq: the sequence id of the call (-1 for a raised event).
        target: the child instance or the entity, if any.
        start_ms: when it was requested (an event: when it arrived).
        end_ms: when the answer was applied (None: still pending).
        duration_ms: ``end_ms - start_ms`` (None: still pending).
        outcome: completed, failed or pending.
    """

    kind: Literal["activity", "timer", "sub_orchestration", "entity", "lock", "event"]
    name: str | None = None
    seq: int = -1
    target: str | None = None
    start_ms: int
    end_ms: int | None = None
    duration_ms: int | None = None
    outcome: Literal["completed", "failed", "pending"]


class InstancePageView(BaseModel):
    """An instance with its children, timeline and history (the dashboard's instance page)."""

    instance: InstanceDetail
    children: list[str]
    timeline: list[TimelineSpan]
    history: list[HistoryEntry]


class EntityInfo(BaseModel):
    """An entity: its id, state and lock."""

    entity_id: str
    name: str
    key: str
    state: Any = None
    last_modified_at: str
    last_modified_at_ms: int
    locked_by: str | None = None
    queued: int = 0
    error_count: int = 0
    last_error: Failure | None = None


class EntityPage(BaseModel):
    """One page of entities and the token of the next (None: this was the last)."""

    items: list[EntityInfo]
    continuation: str | None = None


class DeadLetterInfo(BaseModel):
    """A record on ``H.dead-letters``; ``id`` is ``<partition>:<offset>`` of the dead letter.

    ``not_redrivable`` says why ``durafka dead-letters redrive`` would refuse it (None:
    it can be redriven); ``redriven`` whether it was (None: not looked up, as in pages).
    """

    id: str
    partition: int
    offset: int
    reason: str
    failed_at: str
    failed_at_ms: int
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: str | None = None
    key: str | None = None
    value: str | None = None
    value_base64: str | None = None
    headers: dict[str, str | None] = Field(default_factory=dict)
    key_size: int | None = None
    value_size: int | None = None
    value_sha256: str | None = None
    truncated: list[str] = Field(default_factory=list)
    durafka_version: str | None = None
    written_by: str | None = None
    not_redrivable: str | None = None
    redriven: bool | None = None


class RedriveOutcome(BaseModel):
    """What became of one dead letter asked to be redriven.

    Attributes:
        id: the dead letter, ``<partition>:<offset>``.
        target: where its record went, ``<topic>[<partition>]`` (None: it was refused).
        refused: why it was not redriven (None: it was).
    """

    id: str
    target: str | None = None
    refused: str | None = None


class QuarantinedInstance(BaseModel):
    """An instance the processor quarantined: its stored state did not decode.

    Attributes:
        instance_id: the instance.
        name: its orchestration, if its header still said it (else empty).
        quarantined_at: when (ISO 8601).
        reason: what did not decode, and where its stored values went.
    """

    instance_id: str
    name: str
    quarantined_at: str
    reason: str


class DeadLetterPage(BaseModel):
    """Dead letters, newest first, and the token of the older ones (None: no more)."""

    items: list[DeadLetterInfo]
    continuation: str | None = None


class PartitionInfo(BaseModel):
    """One partition of an input topic: who owns it and how far behind it is.

    Attributes:
        topic: ``H.orchestrations`` (processors) or ``H.activities`` (workers).
        partition: the partition number.
        owner: the consumer group member that owns it (None: nobody does).
        committed: the group's committed offset (None: nothing committed yet).
        end: the offset after the last stable record.
        lag: records waiting: ``end - committed`` (from the start if nothing committed).
        state: ``idle`` (nothing waits), ``unowned`` (input waits and nobody owns it),
            ``active`` (input waits and the committed offset moved since the last
            sample), ``stalled`` (input waits and it did not move: the owner is
            restoring the partition's state, or stuck), or ``waiting`` (input waits,
            no earlier sample to compare with).
    """

    topic: str
    partition: int
    owner: str | None = None
    committed: int | None = None
    end: int
    lag: int
    state: Literal["idle", "unowned", "active", "stalled", "waiting"]


class ClusterInfo(BaseModel):
    """The partitions of a task hub's input topics, and their members."""

    task_hub: str
    bootstrap: str
    sampled_at: str
    processors: list[str]
    workers: list[str]
    partitions: list[PartitionInfo]


class TopicInfo(BaseModel):
    """One topic of the task hub: what the spec asks for, what the broker has, the differences."""

    key: str
    name: str
    exists: bool
    partitions: int | None = None
    replication_factor: int | None = None
    config: dict[str, str] = Field(default_factory=dict)
    expected_partitions: int
    expected_replication_factor: int
    expected_config: dict[str, str] = Field(default_factory=dict)
    differences: list[str] = Field(default_factory=list)


class TopologyReport(BaseModel):
    """The task hub's topics against the spec (``in_sync``: no difference, none missing)."""

    task_hub: str
    spec: str
    in_sync: bool
    topics: list[TopicInfo]


class ReplayFailure(BaseModel):
    """One instance the current code would fail on replay (``durafka replay-check``).

    Attributes:
        instance_id: the instance.
        status: its runtime status in the changelog.
        seq: the sequence id where code and history part (None: not a divergence).
        recorded: the call its history recorded there.
        new: the call the current code makes there (None: none).
        message: the error the instance would fail with.
    """

    instance_id: str
    status: RuntimeStatus | None = None
    seq: int | None = None
    recorded: str | None = None
    new: str | None = None
    message: str


class ReplayFailureGroup(BaseModel):
    """The instances of one orchestration that fail at one place of its code."""

    orchestration: str
    version: str | None = None
    location: str | None = None
    error_type: str
    count: int
    instances: list[ReplayFailure]


class ReplayCheckReport(BaseModel):
    """What replaying every live history against the current code found.

    Attributes:
        checked: histories replayed.
        would_fail: how many of them the current code would fail.
        partitions: changelog partitions read.
        records: changelog records read.
        seconds: how long the check took.
        finished_since: instances that finished at or after this time were checked too.
        groups: the failures by orchestration and code location, largest first.
    """

    checked: int
    would_fail: int
    partitions: int
    records: int
    seconds: float
    finished_since: str | None = None
    groups: list[ReplayFailureGroup] = Field(default_factory=list)


class InstanceAt(BaseModel):
    """An instance as it was at a time, reconstructed from the changelog (``history --at``).

    Attributes:
        at: the time asked for.
        instance: its status then (status, custom status, input, output, failure).
        status_from: ``changelog`` (its header as of then) or ``history`` (the
            header's value of then was compacted away: the runtime status is
            inferred from the history, the payloads are unknown).
        complete: False when the history of then has lost its beginning to compaction
            (a later reset, restart or continue-as-new rewrote those chunks).
        pending: what it was waiting for then.
        history: its history up to then.
    """

    at: str
    at_ms: int
    instance: InstanceDetail
    status_from: Literal["changelog", "history"]
    complete: bool
    pending: list[TimelineSpan]
    history: list[HistoryEntry]
