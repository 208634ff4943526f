"""Instance status: what clients, dashboards and analytics see of an instance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from durafka.codec.payload import decode_payload
from durafka.errors import FailureDetails

__all__ = ["ACTIVE_STATUSES", "TERMINAL_STATUSES", "OrchestrationStatus", "RuntimeStatus"]


class RuntimeStatus(StrEnum):
    """The lifecycle state of an orchestration instance."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"
    SUSPENDED = "SUSPENDED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"

    @property
    def is_terminal(self) -> bool:
        """Whether the instance has finished (Completed, Failed or Terminated)."""
        return self in TERMINAL_STATUSES


#: Statuses of finished instances: they take no more events, and only they may be purged.
TERMINAL_STATUSES = frozenset(
    {RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.TERMINATED}
)

#: Statuses in which an instance id is taken: a new start with that id is refused.
ACTIVE_STATUSES = frozenset({RuntimeStatus.PENDING, RuntimeStatus.RUNNING, RuntimeStatus.SUSPENDED})


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class OrchestrationStatus:
    """A snapshot of one instance, as published on the ``H.status`` topic.

    Payloads are kept as the JSON bytes that were written (``serialized_*``);
    the properties decode them to plain JSON values.

    Attributes:
        instance_id: the instance's id.
        name: the orchestration's registered name.
        runtime_status: Pending, Running, Completed, Failed, Terminated, Suspended.
        serialized_input: input as JSON bytes.
        serialized_output: output as JSON bytes (Completed), or the reason (Terminated).
        failure_details: type, message and traceback of the failure (Failed).
        serialized_custom_status: the value of ``ctx.set_custom_status`` as JSON bytes.
        created_at_ms: creation time, ms since the epoch.
        last_updated_at_ms: last status change, ms since the epoch.
        parent_instance_id: the parent's id, for a sub-orchestration.
        execution_id: the execution this status belongs to (each start of the id has
            its own; ``continue_as_new`` keeps it); None for instances started before
            durafka had execution ids.
    """

    instance_id: str
    name: str
    runtime_status: RuntimeStatus
    serialized_input: bytes | None
    serialized_output: bytes | None
    failure_details: FailureDetails | None
    serialized_custom_status: bytes | None
    created_at_ms: int
    last_updated_at_ms: int
    parent_instance_id: str | None = None
    execution_id: str | None = None

    @property
    def input(self) -> Any:
        """The input as plain JSON values."""
        return decode_payload(self.serialized_input)

    @property
    def output(self) -> Any:
        """The output as plain JSON values (None unless Completed or Terminated)."""
        return decode_payload(self.serialized_output)

    @property
    def custom_status(self) -> Any:
        """The custom status as plain JSON values."""
        return decode_payload(self.serialized_custom_status)

    @property
    def created_at(self) -> datetime:
        """When the instance was created (UTC)."""
        return _dt(self.created_at_ms)

    @property
    def last_updated_at(self) -> datetime:
        """When the status last changed (UTC)."""
        return _dt(self.last_updated_at_ms)

    @property
    def is_terminal(self) -> bool:
        """Whether the instance has finished."""
        return self.runtime_status.is_terminal
