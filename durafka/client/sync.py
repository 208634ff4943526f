"""The synchronous client: start, signal, inspect and await orchestration instances and entities."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from durafka.client._common import (
    VIEW_READY_TIMEOUT,
    ClientCore,
    Page,
    check_instance_id,
    seconds,
)
from durafka.client.entity_view import (
    EntityView,
    delete_record,
    entity_metadata,
    entity_page,
    signal_record,
)
from durafka.client.history import read_history
from durafka.client.listing import InstanceQuery, purge_candidates
from durafka.client.status_view import StatusView
from durafka.entities import EntityId, EntityMetadata
from durafka.errors import TransportError
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent, IdReusePolicy
from durafka.settings import Settings
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.transport.base import OutgoingRecord, Producer, Transport
from durafka.transport.delivery import DELIVERY_TIMEOUT, send_and_flush
from durafka.transport.factory import open_transport
from durafka.transport.feeder import ThreadFeeder

__all__ = ["Client"]


class Client:
    """Starts and controls orchestration instances; reads their status.

    Writes go to ``H.orchestrations`` (one record per call, acknowledged before
    the call returns); reads come from a view of ``H.status`` that a background
    thread keeps current from the moment the client is created.

    Example:
        >>> with Client(Settings(bootstrap_servers="127.0.0.1:9092"), app.registry) as client:
        ...     iid = client.start_new(greet, "world")
        ...     print(client.wait_for_completion(iid, timeout=30))

    Args:
        settings: task hub, bootstrap servers, payload limit, client config.
        registry: resolves orchestration names and the types of their inputs
            and outputs; without it, names are the functions' ``__name__`` and
            payloads are plain JSON.
        transport: an open transport to use (and leave open on :meth:`close`);
            default: one opened from ``settings.bootstrap_servers``.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._core = ClientCore(settings, registry)
        self._owns_transport = transport is None
        self._transport = (
            transport
            if transport is not None
            else open_transport(settings.bootstrap, settings.client_config)
        )
        self._view = StatusView()
        self._feeder = ThreadFeeder(self._view, self._transport, self._core.topics.status)
        self._lock = threading.Lock()
        # Created now: an idempotent producer's first send waits for its producer id,
        # which it fetches in the background meanwhile (~0.1-0.5 s otherwise).
        self._producer: Producer | None = self._transport.producer()
        self._partitions: int | None = None
        self._closed = False
        self._feeder.start()
        # Started by the first entity read: most clients never read H.entities.
        self._entity_view: EntityView | None = None
        self._entity_feeder: ThreadFeeder | None = None

    @property
    def status_view(self) -> StatusView:
        """The materialised ``H.status`` this client reads."""
        return self._view

    # -- writing -------------------------------------------------------------------

    def start_new(
        self,
        orchestration: Callable[..., Any] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.REJECT_DUPLICATE,
    ) -> str:
        """Start an orchestration instance.

        A start is idempotent by default: if ``instance_id`` already ran and
        finished, nothing is written and the finished execution is kept (waiting on
        the id returns its result); ``id_reuse_policy`` allows a new execution
        after a failure or after any end instead.

        Args:
            orchestration: the orchestration function or its registered name.
            input: its input, encoded with the orchestration's input type if
                registered, else as plain JSON.
            instance_id: the id to use; default: a random one (32 hex digits).
            id_reuse_policy: what to do if the id's last execution has finished.

        Returns:
            The instance id, once the start record is durably written.

        Raises:
            PayloadTooLargeError: the encoded input exceeds ``max_payload_bytes``
                (nothing was written).
            SerializationError: the input cannot be encoded as JSON.
            InvalidInstanceIdError: ``instance_id`` breaks the id rules
                (:mod:`durafka.ids`; nothing was written).
            InstanceAlreadyExistsError: an instance with this id is Pending,
                Running or Suspended.
            TransportError: the broker did not acknowledge the record.
        """
        iid, name, payload = self._core.prepare_start(orchestration, input, instance_id)
        self._ready()
        execution = self._core.plan_start(iid, self._view.get(iid), id_reuse_policy)
        if execution is not None:
            record = self._core.start_record(
                iid, name, payload, self._partition_count(), execution, id_reuse_policy
            )
            self._send(record)
            self._core.remember_start(iid, execution)
        return iid

    def restart(self, instance_id: str) -> str:
        """Run a finished instance again: a new execution with the same id, name and input.

        The input is the one its status shows (after ``continue_as_new``, the last
        generation's). The start carries ``IdReusePolicy.ALLOW_DUPLICATE``.

        Returns:
            The new execution's id (``OrchestrationStatus.execution_id`` once it runs).

        Raises:
            InstanceNotFoundError: no such instance is known to the status view.
            InstanceNotFinishedError: the instance is Pending, Running or Suspended.
        """
        self._ready()
        name, payload, execution = self._core.plan_restart(instance_id, self._view.get(instance_id))
        record = self._core.start_record(
            instance_id,
            name,
            payload,
            self._partition_count(),
            execution,
            IdReusePolicy.ALLOW_DUPLICATE,
        )
        self._send(record)
        self._core.remember_start(instance_id, execution)
        return execution

    def terminate(self, instance_id: str, reason: str | None = None) -> None:
        """Ask the instance to stop; it ends Terminated with ``reason`` as its output."""
        payload = self._core.encode_reason(reason, f"termination reason for {instance_id!r}")
        self._control(instance_id, EventKind.EXECUTION_TERMINATED, payload=payload)

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Deliver an external event to a running instance (``ctx.wait_for_external_event``).

        Raises:
            InstanceNotFoundError: no such instance is known.
            InstanceNotRunningError: the instance has finished.
            PayloadTooLargeError: the encoded data exceeds ``max_payload_bytes``.
        """
        payload = self._core.encode_event_data(instance_id, name, data)
        self._ready()
        self._core.check_can_raise(instance_id, self._view.get(instance_id))
        self._control(instance_id, EventKind.EVENT_RAISED, name=name, payload=payload)

    def suspend(self, instance_id: str, reason: str | None = None) -> None:
        """Pause the instance: events are held back until :meth:`resume`."""
        payload = self._core.encode_reason(reason, f"suspension reason for {instance_id!r}")
        self._control(instance_id, EventKind.EXECUTION_SUSPENDED, payload=payload)

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Continue a suspended instance."""
        payload = self._core.encode_reason(reason, f"resumption reason for {instance_id!r}")
        self._control(instance_id, EventKind.EXECUTION_RESUMED, payload=payload)

    def purge(self, instance_id: str) -> None:
        """Delete a finished instance: its history, its state and its status.

        The processor owning the instance deletes its store keys (tombstones in
        ``H.state-changelog``) and publishes a tombstone on ``H.status``; the
        status disappears from views once that record is read. The processor
        checks again that the instance has finished (it may have been restarted
        under the same id meanwhile) and otherwise leaves it alone.

        Raises:
            InstanceNotFoundError: no such instance is known to the status view.
            InstanceNotFinishedError: the instance is Pending, Running or Suspended.
        """
        self._ready()
        self._core.check_can_purge(instance_id, self._view.get(instance_id))
        self._control(instance_id, EventKind.EXECUTION_PURGED)

    def purge_instances(
        self,
        *,
        status: RuntimeStatus | str | Iterable[RuntimeStatus | str] | None = None,
        created_before: datetime | None = None,
    ) -> int:
        """Purge every finished instance matching the filter (see :meth:`purge`).

        Args:
            status: only instances in these terminal statuses (default: Completed,
                Failed and Terminated).
            created_before: only instances created before this time (timezone-aware).

        Returns:
            How many purge commands were written (instances the view showed as finished).

        Raises:
            ValueError: ``status`` names a status that is not terminal.
        """
        self._ready()
        ids = purge_candidates(self._view.all(), status=status, created_before=created_before)
        partitions = self._partition_count()
        self._send_all(
            [self._core.control_record(i, EventKind.EXECUTION_PURGED, partitions) for i in ids]
        )
        return len(ids)

    def rewind(self, instance_id: str, reason: str | None = None) -> None:
        """Put a Failed instance back to Running, retrying the calls that failed it.

        Durable Functions' rewind: the failed activities run again and failed
        sub-orchestrations are rewound (recursively), everything that succeeded is
        kept, and the history keeps the failures and records the rewind. Only
        failures from activities and sub-orchestrations can be rewound; the
        processor checks it (durafka/runtime/rewind.py) and refuses, with a log
        line, what it cannot rewind (``Management.rewind`` checks before sending).
        Results the failed attempt still delivers are dropped (a rewind gives the
        execution a new token).

        Raises:
            InstanceNotFoundError: no such instance is known to the status view.
            RewindError: the instance is not Failed.
        """
        self._ready()
        self._send(
            self._core.rewind_record(
                instance_id, self._view.get(instance_id), reason, self._partition_count()
            )
        )

    def reset(self, instance_id: str, *, to_event: int, reason: str | None = None) -> str:
        """Run the instance again from an earlier point of its history (Temporal's reset).

        A new execution replays the history's events ``[0, to_event)`` (the ``#``
        column of ``durafka history``) with the current code and goes on from
        there; the current execution ends (Terminated, reason ``"reset"``) if it was
        still running. Calls pending at the point are issued again: activities
        after the point run again (at-least-once), children started after it are
        terminated and started again, external events raised after it are
        delivered again. Work the old execution has in flight carries its token and
        is dropped.

        Returns:
            The new execution's id (``OrchestrationStatus.execution_id`` once it runs).

        Raises:
            InstanceNotFoundError: no such instance is known to the status view.
            ValueError: ``to_event`` is below 1.
        """
        self._ready()
        record, execution = self._core.reset_record(
            instance_id, self._view.get(instance_id), to_event, reason, self._partition_count()
        )
        self._send(record)
        return execution

    def _control(
        self,
        instance_id: str,
        kind: EventKind,
        *,
        name: str | None = None,
        payload: bytes | None = None,
        seq: int = -1,
        execution_id: str | None = None,
    ) -> None:
        partitions = self._partition_count()
        self._send(
            self._core.control_record(
                instance_id,
                kind,
                partitions,
                name=name,
                payload=payload,
                seq=seq,
                execution_id=execution_id,
            )
        )

    # -- reading -------------------------------------------------------------------

    def get_status(self, instance_id: str) -> OrchestrationStatus | None:
        """The latest status of the instance, or ``None`` if unknown (or purged)."""
        self._ready()
        return self._view.get(instance_id)

    def wait_for_status(
        self,
        instance_id: str,
        timeout: float | timedelta | None = 60,
        *,
        execution_id: str | None = None,
    ) -> OrchestrationStatus:
        """Wait until the instance is Completed, Failed or Terminated.

        An id this client started waits for the execution it started (a restarted
        id never returns the previous execution's status).

        Args:
            instance_id: the instance.
            timeout: how long to wait at most (seconds or timedelta; None: forever).
            execution_id: wait for this execution (``OrchestrationStatus.execution_id``).

        Returns:
            The terminal status.

        Raises:
            WaitTimeoutError: not terminal in time; the message names the last status seen.
        """
        self._check_open()
        return self._view.wait_for(
            instance_id,
            self._core.wait_predicate(instance_id, execution_id),
            seconds(timeout),
            what="a terminal status",
        )

    def wait_for_completion(
        self,
        instance_id: str,
        timeout: float | timedelta | None = 60,
        *,
        raise_on_failure: bool = True,
    ) -> Any:
        """Wait for the instance to finish and return its output.

        Returns:
            The output, decoded with the orchestration's return type if it is
            registered, else plain JSON; ``None`` if it failed or was
            terminated and ``raise_on_failure`` is False.

        Raises:
            OrchestrationFailed: it ended Failed or Terminated (its ``status``
                attribute holds the details).
            WaitTimeoutError: it did not finish in time.
        """
        status = self.wait_for_status(instance_id, timeout)
        return self._core.completion_result(status, raise_on_failure)

    def list_instances(
        self,
        *,
        status: RuntimeStatus | str | Iterable[RuntimeStatus | str] | None = None,
        name: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        id_prefix: str | None = None,
        descending: bool = False,
        page_size: int = 100,
        continuation: str | None = None,
    ) -> Page[OrchestrationStatus]:
        """One page of instances, ordered by (creation time, instance id).

        Args:
            status: only these runtime statuses.
            name: only instances of this orchestration.
            created_from: created at or after (timezone-aware).
            created_to: created before (timezone-aware).
            id_prefix: only instance ids that start with this.
            descending: newest first (the same order, reversed).
            page_size: items per page at most.
            continuation: the ``continuation`` of the previous page (same filters).

        A range read of the status view's index (:mod:`durafka.client.listing`),
        not a scan: fast on a view of 100,000 instances.

        Raises:
            ValueError: an unknown status, a naive datetime, ``page_size`` below 1
                or a continuation token no page returned.
        """
        query = InstanceQuery.of(
            status=status,
            name=name,
            created_from=created_from,
            created_to=created_to,
            id_prefix=id_prefix,
            descending=descending,
            page_size=page_size,
            continuation=continuation,
        )
        self._ready()
        return self._view.page(query)

    def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The typed history events of the instance's current generation, oldest first.

        Scans the instance's partition of the changelog ``H.state-changelog``
        from the beginning (see :mod:`durafka.client.history`): a debugging and
        operations tool, not a hot path. After ``continue_as_new`` only the
        current generation is left; after a purge the list is empty.

        Returns:
            The events (``[]`` for an unknown or purged instance).
        """
        self._check_open()
        return read_history(self._transport, self._core.topics, check_instance_id(instance_id))

    # -- entities ------------------------------------------------------------------

    def signal_entity(self, entity_id: EntityId, operation: str, input: Any = None) -> None:
        """Send a one-way operation to an entity (created by its first operation).

        Args:
            entity_id: the entity.
            operation: the operation (a method name of a class entity).
            input: its input, encoded with the operation's input type when this
                client's registry has the entity, else as plain JSON.

        Raises:
            PayloadTooLargeError: the encoded input exceeds ``max_payload_bytes``.
            TransportError: the broker did not acknowledge the record.
        """
        self._send(
            signal_record(
                self._core.settings,
                self._core.registry,
                entity_id,
                operation,
                input,
                self._partition_count(),
            )
        )

    def delete_entity(self, entity_id: EntityId) -> None:
        """Delete an entity's state (a built-in operation, queued like any other).

        Once processed, :meth:`get_entity` returns ``None`` and ``H.entities``
        holds a tombstone for it (unless it is locked or has queued operations,
        which are kept).
        """
        self._send(
            delete_record(
                self._core.settings, self._core.registry, entity_id, self._partition_count()
            )
        )

    def get_entity(self, entity_id: EntityId) -> EntityMetadata | None:
        """The entity's state and last modification time; ``None`` if it has no state.

        Read from the view of ``H.entities``, which shows operations once their
        batch committed (a signal just sent may not be visible yet).
        """
        record = self._entities_ready().get(str(entity_id))
        return None if record is None else entity_metadata(self._core.registry, record)

    def list_entities(
        self,
        *,
        name: str | None = None,
        page_size: int = 100,
        continuation: str | None = None,
    ) -> Page[EntityMetadata]:
        """One page of entities that have a state, ordered by entity id.

        Args:
            name: only entities of this name.
            page_size: items per page at most.
            continuation: the ``continuation`` of the previous page.
        """
        return entity_page(
            self._core.registry,
            self._entities_ready().all(),
            name=name,
            page_size=page_size,
            continuation=continuation,
        )

    @property
    def entity_view(self) -> EntityView:
        """The materialised ``H.entities`` (started on first use; waits until caught up)."""
        return self._entities_ready()

    def _entities_ready(self) -> EntityView:
        with self._lock:
            self._check_open()
            if self._entity_view is None:
                view = EntityView()
                feeder = ThreadFeeder(view, self._transport, self._core.topics.entities)
                feeder.start()
                self._entity_view, self._entity_feeder = view, feeder
            view = self._entity_view
        view.wait_ready(VIEW_READY_TIMEOUT)
        return view

    # -- plumbing ------------------------------------------------------------------

    def _ready(self) -> None:
        self._check_open()
        self._view.wait_ready(VIEW_READY_TIMEOUT)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("this client is closed; create a new one")

    def _partition_count(self) -> int:
        self._check_open()
        if self._partitions is None:
            self._partitions = self._transport.partition_count(self._core.topics.orchestrations)
        return self._partitions

    def _get_producer(self) -> Producer:
        with self._lock:
            self._check_open()
            assert self._producer is not None  # only None once closed
            return self._producer

    def _send(self, out: OutgoingRecord) -> None:
        self._send_all([out])

    def _send_all(self, outs: list[OutgoingRecord]) -> None:
        """Produce ``outs`` and wait until the broker acknowledged every one (one flush)."""
        if outs:
            send_and_flush(self._get_producer(), outs)

    def close(self) -> None:
        """Stop the status view and release the producer (and the transport if owned)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            producer, self._producer = self._producer, None
        self._view.fail(TransportError("the client was closed while waiting"))
        self._feeder.stop()
        if self._entity_view is not None and self._entity_feeder is not None:
            self._entity_view.fail(TransportError("the client was closed while waiting"))
            self._entity_feeder.stop()
        try:
            if producer is not None:
                producer.flush(DELIVERY_TIMEOUT)
                producer.close()
        finally:
            if self._owns_transport:
                self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
