"""What the sync and the asyncio client share: validation, encoding, results, paging.

Everything here is free of I/O, so :class:`~durafka.client.sync.Client` and
:class:`~durafka.client.aio.AsyncClient` differ only in how they produce a
record and how they wait, never in what they write or what they accept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from durafka.codec.payload import decode_payload, encode_checked, encode_payload
from durafka.codec.records import encode_message
from durafka.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFinishedError,
    InstanceNotFoundError,
    InstanceNotRunningError,
    OrchestrationFailed,
    RewindError,
    UnknownFunctionError,
)
from durafka.ids import check_orchestration_id, new_id
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent, IdReusePolicy, reuse_allowed
from durafka.settings import Settings
from durafka.status import ACTIVE_STATUSES, OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord

#: How long a client call waits for the status view to catch up before giving up.
VIEW_READY_TIMEOUT = 60.0

# Ids this client started recently, so that raise_event right after start_new is
# accepted before the processor has published the instance's first status.
_RECENT_STARTS = 10_000


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of :meth:`~durafka.client.Client.list_instances` or ``list_entities``.

    Attributes:
        items: the statuses of this page, ordered by (creation time, instance id),
            or the entities, ordered by entity id.
        continuation: pass it back as ``continuation=`` for the next page;
            ``None`` when this is the last page.
    """

    items: list[T]
    continuation: str | None


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (record timestamps)."""
    return time.time_ns() // 1_000_000


def seconds(timeout: float | timedelta | None) -> float | None:
    """A timeout in seconds (``None``: wait forever); negative values are an error."""
    if timeout is None:
        return None
    value = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if value < 0:
        raise ValueError(f"timeout must not be negative, got {timeout!r}")
    return value


def is_terminal(status: OrchestrationStatus) -> bool:
    """Whether ``status`` is Completed, Failed or Terminated (of whatever execution)."""
    return status.runtime_status.is_terminal


def terminal_of(execution_id: str | None) -> Callable[[OrchestrationStatus], bool]:
    """The predicate of ``wait_for_status``: a terminal status of ``execution_id``.

    A client waiting on an id it just started again must not take the previous
    execution's output for the new one's. ``None`` (an id this client did not
    start, or a status written before execution ids) accepts any terminal status.
    """
    if execution_id is None:
        return is_terminal

    def of_execution(status: OrchestrationStatus) -> bool:
        return status.runtime_status.is_terminal and status.execution_id in (execution_id, None)

    return of_execution


class ClientCore:
    """The I/O-free half of a client: names, payloads, records, checks and results.

    Args:
        settings: the app's settings (task hub, payload limit).
        registry: resolves orchestration names and their payload adapters.
    """

    def __init__(self, settings: Settings, registry: Registry | None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else Registry()
        self.topics = HubTopics(settings.task_hub)
        self._started: OrderedDict[str, str | None] = OrderedDict()
        # Ids rewound by this client: the time of the failure they were rewound from.
        self._rewound: OrderedDict[str, int] = OrderedDict()

    # -- records -----------------------------------------------------------------

    def prepare_start(
        self,
        orchestration: Callable[..., Any] | str,
        input: Any,
        instance_id: str | None,
    ) -> tuple[str, str, bytes | None]:
        """Resolve the name, choose the id and encode the input (size-checked).

        Returns:
            ``(instance_id, name, input JSON or None)``.

        A client whose registry knows orchestrations checks the start as the
        processor will: the name must be registered, and the input must decode
        with the orchestration's input type. A client without a registry (or
        whose registry knows no orchestration) sends any name and plain JSON.

        Raises:
            UnknownFunctionError: the registry knows orchestrations, not this one.
            PayloadTooLargeError: the input is over ``max_payload_bytes``.
            SerializationError: the input cannot be encoded, or its JSON does not
                validate against the orchestration's input type.
            InvalidInstanceIdError: ``instance_id`` breaks the id rules.
        """
        name = self.registry.name_of(orchestration, self.registry.orchestrations)
        iid = new_id() if instance_id is None else check_instance_id(instance_id)
        definition = self.registry.orchestrations.get(name)
        if definition is None and self.registry.orchestrations:
            raise UnknownFunctionError(
                f"no orchestration named {name!r} is registered with this client "
                f"(known: {sorted(self.registry.orchestrations)}); nothing was written. Check "
                "the name, or start orchestrations of another app with a client without a "
                "registry (durafka.Client(settings))"
            )
        if input is None or definition is None or not definition.takes_input:
            return iid, name, self._encode(input, None, f"input of {name!r}")
        payload = encode_checked(
            input,
            definition.input_adapter,
            max_bytes=self.settings.max_payload_bytes,
            what=f"input of {name!r}",
        )
        return iid, name, payload

    def plan_start(
        self,
        instance_id: str,
        current: OrchestrationStatus | None,
        policy: IdReusePolicy,
    ) -> str | None:
        """The execution id of a new start, or None when the existing one is kept.

        Raises:
            InstanceAlreadyExistsError: the id is Pending, Running or Suspended.
        """
        self.check_can_start(instance_id, current)
        if current is not None and not reuse_allowed(policy, current.runtime_status):
            # As the processor would: the finished execution stays; waits get its result.
            self.remember_start(instance_id, current.execution_id)
            return None
        return new_id()

    def plan_restart(
        self, instance_id: str, current: OrchestrationStatus | None
    ) -> tuple[str, bytes | None, str]:
        """The name, input and new execution id of a restart of a finished instance.

        Raises:
            InstanceNotFoundError: no such instance is known to the status view.
            InstanceNotFinishedError: it is Pending, Running or Suspended.
        """
        check_instance_id(instance_id)
        if current is None:
            raise InstanceNotFoundError(
                f"no instance {instance_id!r} is known to the status view (never started, "
                "purged, or another task hub); nothing to restart"
            )
        if not current.runtime_status.is_terminal:
            raise InstanceNotFinishedError(
                f"instance {instance_id!r} is {current.runtime_status.value}; only Completed, "
                "Failed or Terminated instances can be restarted: terminate it first"
            )
        return current.name, current.serialized_input, new_id()

    def start_record(
        self,
        instance_id: str,
        name: str,
        payload: bytes | None,
        partitions: int,
        execution_id: str,
        policy: IdReusePolicy = IdReusePolicy.REJECT_DUPLICATE,
    ) -> OutgoingRecord:
        """The ``EXECUTION_STARTED`` record of a new execution."""
        event = HistoryEvent(
            EventKind.EXECUTION_STARTED,
            now_ms(),
            name=name,
            payload=payload,
            execution_id=execution_id,
            id_reuse_policy=policy,
        )
        return self._record(instance_id, event, partitions)

    def control_record(
        self,
        instance_id: str,
        kind: EventKind,
        partitions: int,
        *,
        name: str | None = None,
        payload: bytes | None = None,
        seq: int = -1,
        execution_id: str | None = None,
    ) -> OutgoingRecord:
        """A control event (terminate, raise, suspend, resume, rewind, reset) of an instance."""
        event = HistoryEvent(
            kind, now_ms(), seq=seq, name=name, payload=payload, execution_id=execution_id
        )
        return self._record(instance_id, event, partitions)

    def encode_reason(self, reason: str | None, what: str) -> bytes | None:
        """A terminate/suspend/resume reason as a JSON string (size-checked)."""
        return None if reason is None else self._encode(reason, None, what)

    def encode_event_data(self, instance_id: str, name: str, data: Any) -> bytes | None:
        """External event data as JSON (size-checked); ``None`` stays ``None``."""
        return self._encode(data, None, f"data of event {name!r} for instance {instance_id!r}")

    def _encode(self, value: Any, adapter: Any, what: str) -> bytes | None:
        if value is None:
            return None
        return encode_payload(value, adapter, max_bytes=self.settings.max_payload_bytes, what=what)

    def _record(self, instance_id: str, event: HistoryEvent, partitions: int) -> OutgoingRecord:
        key = check_instance_id(instance_id).encode()
        return OutgoingRecord(
            self.topics.orchestrations,
            partition_for(key, partitions),
            key,
            encode_message(instance_id, event),
        )

    # -- checks ------------------------------------------------------------------

    def remember_start(self, instance_id: str, execution_id: str | None) -> None:
        """Note an id this client started, and its execution (see :meth:`wait_predicate`)."""
        self._started[instance_id] = execution_id
        self._started.move_to_end(instance_id)
        self._rewound.pop(instance_id, None)
        while len(self._started) > _RECENT_STARTS:
            self._started.popitem(last=False)

    def wait_predicate(
        self, instance_id: str, execution_id: str | None
    ) -> Callable[[OrchestrationStatus], bool]:
        """What ``wait_for_status`` waits for: a terminal status of the execution given,
        else of the one this client started last under the id, else of any."""
        predicate = terminal_of(execution_id or self._started.get(instance_id))
        rewound_after = self._rewound.get(instance_id)
        if rewound_after is None:
            return predicate

        def after_rewind(status: OrchestrationStatus) -> bool:
            return predicate(status) and status.last_updated_at_ms > rewound_after

        return after_rewind

    def check_can_start(self, instance_id: str, current: OrchestrationStatus | None) -> None:
        """Refuse a start whose id is held by a pending, running or suspended instance."""
        if current is not None and current.runtime_status in ACTIVE_STATUSES:
            raise InstanceAlreadyExistsError(
                f"instance {instance_id!r} already exists and is {current.runtime_status.value} "
                f"(orchestration {current.name!r}); choose another instance id, or terminate "
                "it or wait for it to finish first"
            )

    def check_can_raise(self, instance_id: str, current: OrchestrationStatus | None) -> None:
        """Refuse an event to an unknown or finished instance (the view must be ready)."""
        check_instance_id(instance_id)
        if current is None:
            if instance_id in self._started:
                return  # started here; its first status is not published yet
            raise InstanceNotFoundError(
                f"no instance {instance_id!r} is known to the status view; "
                "check the id (and the task hub), or start the instance first"
            )
        if current.runtime_status.is_terminal:
            raise InstanceNotRunningError(
                f"instance {instance_id!r} is {current.runtime_status.value} and takes no "
                "more events; start a new instance instead"
            )

    def check_can_purge(self, instance_id: str, current: OrchestrationStatus | None) -> None:
        """Refuse to purge an unknown instance or one that has not finished (view ready)."""
        check_instance_id(instance_id)
        if current is None:
            raise InstanceNotFoundError(
                f"no instance {instance_id!r} is known to the status view (never started, "
                "already purged, or another task hub); nothing to purge"
            )
        if not current.runtime_status.is_terminal:
            raise InstanceNotFinishedError(
                f"instance {instance_id!r} is {current.runtime_status.value}; only Completed, "
                "Failed or Terminated instances can be purged: terminate it first, or wait "
                "for it to finish"
            )

    def rewind_record(
        self,
        instance_id: str,
        current: OrchestrationStatus | None,
        reason: str | None,
        partitions: int,
    ) -> OutgoingRecord:
        """The ``EXECUTION_REWOUND`` record of a rewind, checked (view ready); waits on the
        id then want a terminal status after the failure it rewinds.

        Raises:
            InstanceNotFoundError: the instance is unknown.
            RewindError: it is not Failed.
        """
        check_instance_id(instance_id)
        payload = self.encode_reason(reason, f"rewind reason for {instance_id!r}")
        current = _known(instance_id, current, "rewind")
        if current.runtime_status is not RuntimeStatus.FAILED:
            raise RewindError(
                f"instance {instance_id!r} is {current.runtime_status.value}; only a Failed "
                "instance can be rewound (reset works in any status)"
            )
        record = self.control_record(
            instance_id, EventKind.EXECUTION_REWOUND, partitions, payload=payload
        )
        self._rewound[instance_id] = current.last_updated_at_ms
        self._rewound.move_to_end(instance_id)
        while len(self._rewound) > _RECENT_STARTS:
            self._rewound.popitem(last=False)
        return record

    def reset_record(
        self,
        instance_id: str,
        current: OrchestrationStatus | None,
        to_event: int,
        reason: str | None,
        partitions: int,
    ) -> tuple[OutgoingRecord, str]:
        """The ``EXECUTION_RESET`` record of a reset and its new execution id (view ready);
        waits on the id then want that execution.

        Raises:
            InstanceNotFoundError: the instance is unknown.
            ValueError: ``to_event`` is below 1.
        """
        check_instance_id(instance_id)
        payload = self.encode_reason(reason, f"reset reason for {instance_id!r}")
        current = _known(instance_id, current, "reset")
        if to_event < 1:
            raise ValueError(f"to_event must be an event index of the history (>= 1): {to_event}")
        execution = new_id()
        record = self.control_record(
            instance_id,
            EventKind.EXECUTION_RESET,
            partitions,
            payload=payload,
            seq=to_event,
            execution_id=execution,
        )
        self.remember_start(instance_id, execution)
        return record, execution

    # -- results -----------------------------------------------------------------

    def completion_result(self, status: OrchestrationStatus, raise_on_failure: bool) -> Any:
        """The decoded output of a terminal status, or ``OrchestrationFailed``."""
        if status.runtime_status is RuntimeStatus.COMPLETED:
            definition = self.registry.orchestrations.get(status.name)
            adapter = definition.output_adapter if definition is not None else None
            return decode_payload(
                status.serialized_output,
                adapter,
                what=f"output of {status.name!r} (instance {status.instance_id!r})",
            )
        if raise_on_failure:
            raise OrchestrationFailed(failure_message(status), status=status)
        return None


def _known(
    instance_id: str, current: OrchestrationStatus | None, action: str
) -> OrchestrationStatus:
    """``current``, or the error saying the instance is unknown and there is nothing to do."""
    if current is None:
        raise InstanceNotFoundError(
            f"no instance {instance_id!r} is known to the status view (never started, "
            f"purged, or another task hub); nothing to {action}"
        )
    return current


def failure_message(status: OrchestrationStatus) -> str:
    """Why an instance ended Failed or Terminated, for ``OrchestrationFailed``."""
    head = f"instance {status.instance_id!r} of {status.name!r} {status.runtime_status.value}"
    if status.runtime_status is RuntimeStatus.TERMINATED:
        reason = status.output
        return f"{head}: {reason}" if reason is not None else head
    failure = status.failure_details
    if failure is not None:
        return f"{head}: {failure.error_type}: {failure.message}"
    return head


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is a valid orchestration id (the rules of :mod:`durafka.ids`).

    Raises:
        InvalidInstanceIdError: (a ``ValueError``) it is empty, too long, contains a
            control character (NUL included) or starts with ``@`` (entity ids).
    """
    return check_orchestration_id(instance_id)
