"""``Management``: every operation an operator runs, for the CLI and the HTTP API alike.

The command line (``durafka list``, ``durafka terminate``, ...) and the HTTP
API of ``durafka serve`` both call this class and print or return its models
(:mod:`durafka.management.models`); neither has logic of its own beyond
parsing its input.

It is built on a :class:`~durafka.client.Client` (status view, entity view,
control records, history) and adds what an operator needs beyond the client:

* strict checks before anything is written: an unknown instance, an action its
  status does not allow (terminating a finished instance, resuming one that is
  not suspended), an orchestration, entity or operation name the app does not
  register, an input that does not match its registered type;
* ``restart``: a new execution of a finished instance with the same name and
  input (``IdReusePolicy.ALLOW_DUPLICATE``, see docs/architecture.md, "Executions");
* dead letters, partitions and the topology (:mod:`.deadletters`,
  :mod:`.cluster`, :mod:`.topics`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import TypeAdapter, ValidationError

from durafka.client._common import VIEW_READY_TIMEOUT
from durafka.client.changelog import StoredInstance, read_instances
from durafka.client.listing import StatusFilter
from durafka.client.status_view import StatusView
from durafka.client.sync import Client
from durafka.entities import DELETE_OPERATION, EntityId, EntityMetadata
from durafka.errors import (
    InstanceNotFinishedError,
    InstanceNotFoundError,
    InstanceNotRunningError,
    InstanceQuarantinedError,
    RewindError,
    SerializationError,
    UnknownFunctionError,
)
from durafka.ids import check_entity_parts, check_orchestration_id
from durafka.management.cluster import ClusterMonitor, ThroughputPoint
from durafka.management.deadletters import (
    parse_dead_letter_id,
    read_dead_letter,
    read_dead_letters,
    redriven,
)
from durafka.management.models import (
    ClusterInfo,
    DeadLetterInfo,
    DeadLetterPage,
    EntityInfo,
    EntityPage,
    Failure,
    HistoryEntry,
    InstanceAt,
    InstanceDetail,
    InstancePage,
    InstancePageView,
    InstanceSummary,
    QuarantinedInstance,
    RedriveOutcome,
    ReplayCheckReport,
    StatusCounts,
    TopologyReport,
    iso,
    json_payload,
)
from durafka.management.redrive import redrive
from durafka.management.replaycheck import ReplayCheckProgress, replay_check
from durafka.management.timeline import timeline
from durafka.management.topics import topology_report
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.runtime.rewind import plan_reset, plan_rewind
from durafka.settings import Settings
from durafka.status import ACTIVE_STATUSES, OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport.base import Transport
from durafka.transport.client_config import for_client
from durafka.transport.factory import open_transport

if TYPE_CHECKING:
    from datetime import datetime

    from durafka.app import App

__all__ = ["Management"]


class Management:
    """Operations on one task hub's instances, entities, dead letters, partitions and topics.

    Thread-safe (the HTTP API calls it from many threads). Close it when done.

    Args:
        settings: the task hub, the bootstrap servers and the client config.
        registry: the app's functions; names and inputs are checked against it
            when it registers any (without one, any name and any JSON go).
        transport: an open transport to use (and leave open); default: one
            opened from the settings, closed by :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else Registry()
        self.topics = HubTopics(settings.task_hub)
        self._owns_transport = transport is None
        self.transport = (
            transport
            if transport is not None
            else open_transport(settings.bootstrap, settings.client_config)
        )
        self.cluster = ClusterMonitor(self.transport, self.topics)
        self._client: Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The client it acts through (created on first use: topology and partitions
        commands need no status view)."""
        with self._lock:
            if self._client is None:
                self._client = Client(self.settings, self.registry, self.transport)
            return self._client

    @classmethod
    def for_app(cls, app: App) -> Management:
        """Management of ``app``'s task hub, checking names and inputs against its registry."""
        return cls(app.settings, app.registry, app.transport)

    # -- instances -----------------------------------------------------------------

    def list_instances(
        self,
        *,
        status: StatusFilter = None,
        name: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        id_prefix: str | None = None,
        descending: bool = False,
        page_size: int = 100,
        continuation: str | None = None,
    ) -> InstancePage:
        """One page of instances (see :meth:`durafka.client.Client.list_instances`).

        Raises:
            ValueError: an unknown status, a naive datetime, a bad page size or token.
        """
        page = self.client.list_instances(
            status=status,
            name=name,
            created_from=created_from,
            created_to=created_to,
            id_prefix=id_prefix,
            descending=descending,
            page_size=page_size,
            continuation=continuation,
        )
        return InstancePage(
            items=[InstanceSummary.of(s) for s in page.items], continuation=page.continuation
        )

    def counts(self, name: str | None = None) -> StatusCounts:
        """How many instances (of orchestration ``name``) are in each runtime status."""
        counts = self._view().counts(name)
        return StatusCounts(name=name, total=sum(counts.values()), counts=counts)

    def orchestration_names(self) -> dict[str, int]:
        """Every orchestration the app registers or the status view shows, with its instances."""
        seen = self._view().names()
        return {n: seen.get(n, 0) for n in sorted(set(seen) | set(self.registry.orchestrations))}

    def get_instance(self, instance_id: str) -> InstanceDetail:
        """The status of one instance, with its payloads.

        Raises:
            InvalidInstanceIdError: the id breaks the id rules.
            InstanceNotFoundError: no such instance.
        """
        return InstanceDetail.of(self._status(instance_id))

    def history(self, instance_id: str) -> list[HistoryEntry]:
        """The history of the instance's current generation (scans one changelog partition).

        Raises:
            InvalidInstanceIdError: the id breaks the id rules.
        """
        return [HistoryEntry.of(e) for e in self.history_events(instance_id)]

    def history_events(self, instance_id: str) -> list[HistoryEvent]:
        """The typed events of :meth:`history` (what ``durafka history --json`` writes
        in the format replay tests load, :mod:`durafka.codec.history_json`).

        Raises:
            InvalidInstanceIdError: the id breaks the id rules.
        """
        check_orchestration_id(instance_id)
        return self.client.get_history(instance_id)

    def instance_at(self, instance_id: str, at: datetime) -> InstanceAt:
        """The instance as it was at ``at``: status, custom status, pending calls, history.

        Reconstructed from its changelog partition, keeping only records produced
        by then (see :mod:`durafka.client.changelog` for what compaction keeps).

        Raises:
            InvalidInstanceIdError: the id breaks the id rules.
            ValueError: ``at`` has no time zone.
            InstanceNotFoundError: the changelog has nothing of the instance at that time.
        """
        check_orchestration_id(instance_id)
        if at.tzinfo is None:
            raise ValueError("the time needs a time zone")
        at_ms = int(at.timestamp() * 1000)
        stored = self._stored(instance_id, at_ms)
        if stored is None:
            raise InstanceNotFoundError(
                f"the changelog of task hub {self.settings.task_hub!r} has nothing of instance "
                f"{instance_id!r} at {iso(at_ms)} (not started yet, purged, or compacted away)"
            )
        history = stored.history
        source: Literal["changelog", "history"] = "changelog"
        if stored.state is not None:
            status = stored.state.status
        else:
            status, source = _status_from_history(instance_id, history), "history"
        return InstanceAt(
            at=iso(at_ms) or "",
            at_ms=at_ms,
            instance=InstanceDetail.of(status),
            status_from=source,
            complete=any(e.kind is EventKind.EXECUTION_STARTED for e in history[:2]),
            pending=[s for s in timeline(history) if s.outcome == "pending"],
            history=[HistoryEntry.of(e) for e in history],
        )

    def instance_page(self, instance_id: str) -> InstancePageView:
        """Status, children, timeline and history of one instance (one changelog scan).

        Raises:
            InvalidInstanceIdError: the id breaks the id rules.
            InstanceNotFoundError: no such instance.
        """
        detail = self.get_instance(instance_id)
        events = self.client.get_history(instance_id)
        return InstancePageView(
            instance=detail,
            children=[
                e.instance_id
                for e in events
                if e.kind is EventKind.SUB_ORCHESTRATION_CREATED and e.instance_id is not None
            ],
            timeline=timeline(events),
            history=[HistoryEntry.of(e) for e in events],
        )

    def start(self, name: str, input: Any = None, *, instance_id: str | None = None) -> str:
        """Start an instance of orchestration ``name`` with a JSON ``input``.

        Returns:
            The instance id.

        Raises:
            UnknownFunctionError: the app registers orchestrations, not this one.
            SerializationError: ``input`` does not match the orchestration's input type.
            InvalidInstanceIdError: ``instance_id`` breaks the id rules.
            InstanceAlreadyExistsError: the id is pending, running or suspended.
        """
        definition = self.registry.orchestrations.get(name)
        if definition is None and self.registry.orchestrations:
            known = ", ".join(sorted(self.registry.orchestrations))
            raise UnknownFunctionError(
                f"no orchestration named {name!r} is registered (known: {known})"
            )
        if instance_id is not None:
            check_orchestration_id(instance_id)
        value = _validated(
            definition.input_adapter if definition is not None else None,
            input,
            f"input of orchestration {name!r}",
        )
        return self.client.start_new(name, value, instance_id=instance_id)

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Send an external event to a running instance.

        Raises:
            ValueError: the event name is empty.
            InstanceNotFoundError, InstanceNotRunningError: no such instance, or it finished.
        """
        if not event_name:
            raise ValueError("the event name is empty")
        self._status(instance_id, allowed=ACTIVE_STATUSES, action="take events")
        self.client.raise_event(instance_id, event_name, data)

    def terminate(self, instance_id: str, reason: str | None = None) -> None:
        """Stop a pending, running or suspended instance (its children too).

        Raises:
            InstanceNotFoundError, InstanceNotRunningError: no such instance, or it finished.
        """
        self._status(instance_id, allowed=ACTIVE_STATUSES, action="be terminated")
        self.client.terminate(instance_id, reason)

    def suspend(self, instance_id: str, reason: str | None = None) -> None:
        """Pause a pending or running instance.

        Raises:
            InstanceNotFoundError, InstanceNotRunningError: no such instance, or it is
                not pending or running.
        """
        allowed = frozenset({RuntimeStatus.PENDING, RuntimeStatus.RUNNING})
        self._status(instance_id, allowed=allowed, action="be suspended")
        self.client.suspend(instance_id, reason)

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Continue a suspended instance.

        Raises:
            InstanceNotFoundError, InstanceNotRunningError: no such instance, or not suspended.
        """
        allowed = frozenset({RuntimeStatus.SUSPENDED})
        self._status(instance_id, allowed=allowed, action="be resumed")
        self.client.resume(instance_id, reason)

    def purge(self, instance_id: str) -> None:
        """Delete a finished instance's history, state and status.

        Raises:
            InstanceNotFoundError, InstanceNotFinishedError: no such instance, or still active.
        """
        self.client.purge(instance_id)

    def restart(self, instance_id: str) -> str:
        """Run a finished instance again: a new execution, same id, name and input.

        Returns:
            The new execution's id (its status carries it once it runs).

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceNotFinishedError: it is still pending, running or suspended.
        """
        current = self._status(instance_id)
        if not current.runtime_status.is_terminal:
            raise InstanceNotFinishedError(
                f"instance {instance_id!r} is {current.runtime_status.value}; only a finished "
                "instance can be restarted: terminate it first"
            )
        return self.client.restart(instance_id)

    # -- repairs ---------------------------------------------------------------------

    def rewind(self, instance_id: str, reason: str | None = None) -> None:
        """Put a Failed instance back to Running, retrying the calls that failed it.

        Checked first against the instance's history and the app's code (the
        same plan the processor makes, :func:`durafka.runtime.rewind.plan_rewind`),
        so what cannot be rewound is refused here with the reason.

        Raises:
            InstanceNotFoundError: no such instance.
            RewindError: it is not Failed, or its failure cannot be rewound.
        """
        current = self._status(instance_id)
        if current.runtime_status is not RuntimeStatus.FAILED:
            raise RewindError(
                f"instance {instance_id!r} is {current.runtime_status.value}; only a Failed "
                "instance can be rewound (reset works in any status)"
            )
        planned = self._plannable(instance_id, current.name)
        if planned is not None:
            history, generation = planned
            plan_rewind(
                self.registry,
                instance_id,
                history,
                generation=generation,
                max_payload_bytes=self.settings.max_payload_bytes,
            )
        self.client.rewind(instance_id, reason)

    def reset(self, instance_id: str, to_event: int, reason: str | None = None) -> str:
        """Run an instance again from event ``to_event`` of its history (a new execution).

        Checked first against the history and the app's code
        (:func:`durafka.runtime.rewind.plan_reset`).

        Returns:
            The new execution's id.

        Raises:
            InstanceNotFoundError: no such instance.
            RewindError: the point is outside the history, the code does not replay
                the events before it, or it is inside an entity lock.
        """
        current = self._status(instance_id)
        planned = self._plannable(instance_id, current.name)
        if planned is not None:
            history, generation = planned
            plan_reset(
                self.registry,
                instance_id,
                history,
                to_event,
                generation=generation,
                max_payload_bytes=self.settings.max_payload_bytes,
            )
        return self.client.reset(instance_id, to_event=to_event, reason=reason)

    def _plannable(self, instance_id: str, name: str) -> tuple[list[HistoryEvent], int] | None:
        """The history and generation to plan a repair on; None when the app does not
        register the orchestration (the processor, which runs it, still checks)."""
        if name not in self.registry.orchestration_versions:
            return None
        stored = self._stored(instance_id)
        if stored is None or stored.state is None:
            return None
        return stored.history, stored.state.generation

    def _stored(self, instance_id: str, at_ms: int | None = None) -> StoredInstance | None:
        """The instance's header and history, read from its changelog partition."""
        partition = partition_for(
            instance_id.encode(), self.transport.partition_count(self.topics.changelog)
        )
        found = read_instances(
            self.transport, self.topics, partition, instance_id=instance_id, at_ms=at_ms
        )
        return found[0] if found else None

    # -- changing running code -----------------------------------------------------

    def replay_check(
        self,
        *,
        finished_since: datetime | None = None,
        partitions: Sequence[int] | None = None,
        on_progress: Callable[[ReplayCheckProgress], None] | None = None,
    ) -> ReplayCheckReport:
        """Replay every running instance's history against the app's code (see :mod:`.replaycheck`).

        Args:
            finished_since: also check instances that finished at or after this time.
            partitions: only these partitions of the changelog.
            on_progress: progress callback (a progress bar).

        Raises:
            ValueError: ``finished_since`` has no time zone.
        """
        since_ms = None
        if finished_since is not None:
            if finished_since.tzinfo is None:
                raise ValueError("finished_since needs a time zone")
            since_ms = int(finished_since.timestamp() * 1000)
        return replay_check(
            self.transport,
            self.topics,
            self.registry,
            finished_since_ms=since_ms,
            partitions=partitions,
            max_payload_bytes=self.settings.max_payload_bytes,
            on_progress=on_progress,
        )

    # -- entities ------------------------------------------------------------------

    def list_entities(
        self, *, name: str | None = None, page_size: int = 100, continuation: str | None = None
    ) -> EntityPage:
        """One page of entities that have a state, ordered by entity id."""
        page = self.client.list_entities(name=name, page_size=page_size, continuation=continuation)
        return EntityPage(items=[_entity(m) for m in page.items], continuation=page.continuation)

    def get_entity(self, name: str, key: str) -> EntityInfo:
        """One entity's state and lock.

        Raises:
            InvalidInstanceIdError: the name or key breaks the id rules.
            InstanceNotFoundError: the entity has no state.
        """
        entity_id = _entity_id(name, key)
        found = self.client.get_entity(entity_id)
        if found is None:
            raise InstanceNotFoundError(
                f"entity {entity_id} has no state (never used, deleted, or another task hub)"
            )
        return _entity(found)

    def signal_entity(self, name: str, key: str, operation: str, input: Any = None) -> None:
        """Send a one-way operation to an entity.

        Raises:
            InvalidInstanceIdError: the name or key breaks the id rules.
            UnknownFunctionError: the app registers entities, not this one, or the
                entity has no such operation.
            SerializationError: ``input`` does not match the operation's input type.
        """
        entity_id = _entity_id(name, key)
        if not operation:
            raise ValueError("the operation name is empty")
        definition = self.registry.entities.get(name)
        if definition is None and self.registry.entities:
            known = ", ".join(sorted(self.registry.entities))
            raise UnknownFunctionError(f"no entity named {name!r} is registered (known: {known})")
        adapter = None
        if definition is not None and definition.is_class and operation != DELETE_OPERATION:
            op = definition.operation(operation)
            if op is None:
                known = ", ".join(sorted(definition.operations))
                raise UnknownFunctionError(
                    f"entity {name!r} has no operation {operation!r} (operations: {known})"
                )
            adapter = op.input_adapter
        value = _validated(adapter, input, f"input of {operation!r} for entity {entity_id}")
        self.client.signal_entity(entity_id, operation, value)

    def delete_entity(self, name: str, key: str) -> None:
        """Delete an entity's state (queued behind its lock and earlier operations)."""
        self.client.delete_entity(_entity_id(name, key))

    # -- dead letters, partitions, topics --------------------------------------------

    def dead_letters(self, *, limit: int = 50, continuation: str | None = None) -> DeadLetterPage:
        """The newest dead letters, a page at a time (see :mod:`.deadletters`)."""
        return read_dead_letters(
            self.transport, self.topics, limit=limit, continuation=continuation
        )

    def dead_letter(self, dead_letter_id: str) -> DeadLetterInfo:
        """One dead letter by its id ``<partition>:<offset>``.

        Raises:
            ValueError: the id is not ``<partition>:<offset>``.
            InstanceNotFoundError: there is no dead letter with this id.
        """
        partition, offset = parse_dead_letter_id(dead_letter_id)
        found = read_dead_letter(self.transport, self.topics, partition, offset)
        if found is None:
            raise InstanceNotFoundError(
                f"no dead letter {dead_letter_id} on {self.topics.dead_letters} "
                "(expired, or another task hub)"
            )
        found.redriven = redriven(self.transport, self.topics, partition, offset)
        return found

    def redrive(self, dead_letter_ids: Sequence[str]) -> list[RedriveOutcome]:
        """Produce dead letters' records again to their source topics, each at most once.

        See :mod:`.redrive`. Refused ones (no such dead letter, redriven already, a
        stored value, a value cut to fit) say why in their outcome.

        Raises:
            ValueError: an id is not ``<partition>:<offset>``.
            DurafkaError: the transaction failed (nothing was redriven).
        """
        return redrive(
            self.transport,
            self.topics,
            dead_letter_ids,
            **for_client(self.settings.client_config, "producer"),
        )

    def quarantined(self) -> list[QuarantinedInstance]:
        """The instances quarantined because their stored state did not decode.

        FAILED with an ``InstanceQuarantinedError`` (see
        :mod:`durafka.processor.quarantine`), oldest first; their stored values
        are on the dead-letter topic.
        """
        found: list[QuarantinedInstance] = []
        continuation: str | None = None
        while True:
            page = self.client.list_instances(
                status=RuntimeStatus.FAILED, page_size=1000, continuation=continuation
            )
            for status in page.items:
                details = status.failure_details
                if details is not None and details.is_caused_by(InstanceQuarantinedError):
                    found.append(
                        QuarantinedInstance(
                            instance_id=status.instance_id,
                            name=status.name,
                            quarantined_at=iso(status.last_updated_at_ms) or "",
                            reason=details.message,
                        )
                    )
            continuation = page.continuation
            if continuation is None:
                return found

    def partitions(self) -> ClusterInfo:
        """Owner, lag and state of every input partition (a new sample)."""
        return self.cluster.info()

    def throughput(self) -> list[ThroughputPoint]:
        """Records per second between the kept samples of :meth:`partitions`."""
        return self.cluster.throughput()

    def topology(
        self,
        spec: Path | None = None,
        *,
        partitions: int | None = None,
        replication_factor: int | None = None,
    ) -> TopologyReport:
        """The task hub's topics against the topology spec (nothing is changed)."""
        return topology_report(
            self.transport,
            self.settings.task_hub,
            spec,
            partitions=partitions,
            replication_factor=replication_factor,
        )

    # -- plumbing ------------------------------------------------------------------

    def _view(self) -> StatusView:
        view = self.client.status_view
        view.wait_ready(VIEW_READY_TIMEOUT)
        return view

    def _status(
        self,
        instance_id: str,
        *,
        allowed: frozenset[RuntimeStatus] | None = None,
        action: str = "",
    ) -> OrchestrationStatus:
        check_orchestration_id(instance_id)
        current = self.client.get_status(instance_id)
        if current is None:
            raise InstanceNotFoundError(
                f"no instance {instance_id!r} in task hub {self.settings.task_hub!r} "
                "(never started, purged, or another task hub)"
            )
        if allowed is not None and current.runtime_status not in allowed:
            raise InstanceNotRunningError(
                f"instance {instance_id!r} is {current.runtime_status.value} and cannot "
                f"{action} (only {', '.join(sorted(s.value for s in allowed))} instances can)"
            )
        return current

    def close(self) -> None:
        """Release the client, the monitor's consumers and an owned transport."""
        try:
            self.cluster.close()
            if self._client is not None:
                self._client.close()
        finally:
            if self._owns_transport:
                self.transport.close()

    def __enter__(self) -> Management:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _entity_id(name: str, key: str) -> EntityId:
    check_entity_parts(name, key)
    return EntityId(name, key)


def _entity(meta: EntityMetadata) -> EntityInfo:
    return EntityInfo(
        entity_id=str(meta.entity_id),
        name=meta.entity_id.name,
        key=meta.entity_id.key,
        state=json_payload(meta.serialized_state),
        last_modified_at=iso(meta.last_modified_at_ms) or "",
        last_modified_at_ms=meta.last_modified_at_ms,
        locked_by=meta.locked_by,
        queued=meta.queued,
        error_count=meta.error_count,
        last_error=Failure.of(meta.last_error),
    )


def _validated(adapter: TypeAdapter[Any] | None, value: Any, what: str) -> Any:
    """``value`` (plain JSON) as the type ``adapter`` declares, checked before anything is sent."""
    if adapter is None or value is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise SerializationError(f"the {what} does not match its type: {exc}") from None


def _status_from_history(instance_id: str, history: list[HistoryEvent]) -> OrchestrationStatus:
    """A status inferred from a history alone (its header of the time is gone)."""
    start = next((e for e in history if e.kind is EventKind.EXECUTION_STARTED), None)
    runtime = RuntimeStatus.RUNNING
    failure = None
    for e in history:
        if e.kind is EventKind.EXECUTION_COMPLETED:
            runtime = RuntimeStatus.COMPLETED
        elif e.kind is EventKind.EXECUTION_FAILED:
            runtime, failure = RuntimeStatus.FAILED, e.failure
        elif e.kind is EventKind.EXECUTION_TERMINATED:
            runtime = RuntimeStatus.TERMINATED
        elif e.kind is EventKind.EXECUTION_REWOUND or e.kind is EventKind.EXECUTION_RESET:
            runtime, failure = RuntimeStatus.RUNNING, None
    first = history[0].timestamp if history else 0
    last = history[-1].timestamp if history else 0
    return OrchestrationStatus(
        instance_id,
        start.name or "" if start is not None else "",
        runtime,
        start.payload if start is not None else None,
        None,
        failure,
        None,
        first,
        last,
        start.instance_id if start is not None else None,
        start.execution_id if start is not None else None,
    )
