"""The asyncio client: the same calls as :class:`~durafka.client.sync.Client`, awaitable.

It writes and feeds its views through an :class:`~durafka.transport.base.AsyncTransport`:
aiokafka on Kafka, so nothing blocks the event loop; on ``memory://`` (or with
an explicit transport) the transport's producer and feeder threads, whose
waits are still futures resolved by those threads.
"""

from __future__ import annotations

import asyncio
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
from durafka.transport.base import AsyncFeeder, AsyncTransport, OutgoingRecord, Transport
from durafka.transport.factory import open_async_transport

__all__ = ["AsyncClient"]


class AsyncClient:
    """Starts and controls orchestration instances from asyncio code.

    Same methods as :class:`~durafka.client.sync.Client`, as coroutines. Connects
    on first use (or on ``async with``); close it with :meth:`close`.

    Example:
        >>> async with AsyncClient(Settings(bootstrap_servers="127.0.0.1:9092")) as client:
        ...     iid = await client.start_new("greet", "world")
        ...     print(await client.wait_for_completion(iid, timeout=30))

    Args:
        settings: task hub, bootstrap servers, payload limit, client config.
        registry: resolves orchestration names and the types of their inputs
            and outputs; without it, names are the functions' ``__name__`` and
            payloads are plain JSON.
        transport: an open transport to use (and leave open on :meth:`close`);
            default: aiokafka on Kafka, the ``memory://`` transport otherwise.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._core = ClientCore(settings, registry)
        self._transport: AsyncTransport = open_async_transport(
            settings.bootstrap, settings.client_config, transport
        )
        self._view = StatusView()
        self._feeder: AsyncFeeder | None = None
        self._partitions = 0
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        # Started by the first entity read: most clients never read H.entities.
        self._entity_view: EntityView | None = None
        self._entity_feeder: AsyncFeeder | None = None

    @property
    def status_view(self) -> StatusView:
        """The materialised ``H.status`` this client reads."""
        return self._view

    async def start(self) -> None:
        """Connect and start the status view (done by ``async with`` or the first call)."""
        self._check_open()
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            topics = self._core.topics
            try:
                await self._transport.start()
                self._feeder = await self._transport.feed(self._view, topics.status)
                self._partitions = await self._transport.partition_count(topics.orchestrations)
            except BaseException:
                await self._release()  # what started so far; start() may be retried
                raise
            self._started = True

    # -- writing -------------------------------------------------------------------

    async def start_new(
        self,
        orchestration: Callable[..., Any] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.REJECT_DUPLICATE,
    ) -> str:
        """Start an orchestration instance (see :meth:`Client.start_new`)."""
        iid, name, payload = self._core.prepare_start(orchestration, input, instance_id)
        await self._ready()
        execution = self._core.plan_start(iid, self._view.get(iid), id_reuse_policy)
        if execution is not None:
            record = self._core.start_record(
                iid, name, payload, self._partitions, execution, id_reuse_policy
            )
            await self._send(record)
            self._core.remember_start(iid, execution)
        return iid

    async def restart(self, instance_id: str) -> str:
        """Run a finished instance again: a new execution with the same id, name and input.

        The input is the one its status shows (after ``continue_as_new``, the last
        generation's). The start carries ``IdReusePolicy.ALLOW_DUPLICATE``.

        Returns:
            The new execution's id (``OrchestrationStatus.execution_id`` once it runs).

        Raises:
            InstanceNotFoundError: no such instance is known to the status view.
            InstanceNotFinishedError: the instance is Pending, Running or Suspended.
        """
        await self._ready()
        name, payload, execution = self._core.plan_restart(instance_id, self._view.get(instance_id))
        record = self._core.start_record(
            instance_id, name, payload, self._partitions, execution, IdReusePolicy.ALLOW_DUPLICATE
        )
        await self._send(record)
        self._core.remember_start(instance_id, execution)
        return execution

    async def terminate(self, instance_id: str, reason: str | None = None) -> None:
        """Ask the instance to stop; it ends Terminated with ``reason`` as its output."""
        payload = self._core.encode_reason(reason, f"termination reason for {instance_id!r}")
        await self._control(instance_id, EventKind.EXECUTION_TERMINATED, payload=payload)

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Deliver an external event to a running instance (see :meth:`Client.raise_event`)."""
        payload = self._core.encode_event_data(instance_id, name, data)
        await self._ready()
        self._core.check_can_raise(instance_id, self._view.get(instance_id))
        await self._control(instance_id, EventKind.EVENT_RAISED, name=name, payload=payload)

    async def suspend(self, instance_id: str, reason: str | None = None) -> None:
        """Pause the instance: events are held back until :meth:`resume`."""
        payload = self._core.encode_reason(reason, f"suspension reason for {instance_id!r}")
        await self._control(instance_id, EventKind.EXECUTION_SUSPENDED, payload=payload)

    async def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Continue a suspended instance."""
        payload = self._core.encode_reason(reason, f"resumption reason for {instance_id!r}")
        await self._control(instance_id, EventKind.EXECUTION_RESUMED, payload=payload)

    async def purge(self, instance_id: str) -> None:
        """Delete a finished instance: its history, its state and its status.

        See :meth:`Client.purge`.
        """
        await self._ready()
        self._core.check_can_purge(instance_id, self._view.get(instance_id))
        await self._control(instance_id, EventKind.EXECUTION_PURGED)

    async def purge_instances(
        self,
        *,
        status: RuntimeStatus | str | Iterable[RuntimeStatus | str] | None = None,
        created_before: datetime | None = None,
    ) -> int:
        """Purge every finished instance matching the filter; returns how many.

        See :meth:`Client.purge_instances`.
        """
        await self._ready()
        ids = purge_candidates(self._view.all(), status=status, created_before=created_before)
        partitions = self._partitions
        await self._transport.send_all(
            [self._core.control_record(i, EventKind.EXECUTION_PURGED, partitions) for i in ids]
        )
        return len(ids)

    async def rewind(self, instance_id: str, reason: str | None = None) -> None:
        """Put a Failed instance back to Running, retrying the calls that failed it.

        See :meth:`durafka.client.Client.rewind`.
        """
        await self._ready()
        await self._send(
            self._core.rewind_record(
                instance_id, self._view.get(instance_id), reason, self._partitions
            )
        )

    async def reset(self, instance_id: str, *, to_event: int, reason: str | None = None) -> str:
        """Run the instance again from an earlier point of its history (Temporal's reset).

        See :meth:`durafka.client.Client.reset`.

        Returns:
            The new execution's id.
        """
        await self._ready()
        record, execution = self._core.reset_record(
            instance_id, self._view.get(instance_id), to_event, reason, self._partitions
        )
        await self._send(record)
        return execution

    async def _control(
        self,
        instance_id: str,
        kind: EventKind,
        *,
        name: str | None = None,
        payload: bytes | None = None,
        seq: int = -1,
        execution_id: str | None = None,
    ) -> None:
        await self.start()
        await self._send(
            self._core.control_record(
                instance_id,
                kind,
                self._partitions,
                name=name,
                payload=payload,
                seq=seq,
                execution_id=execution_id,
            )
        )

    # -- reading -------------------------------------------------------------------

    async def get_status(self, instance_id: str) -> OrchestrationStatus | None:
        """The latest status of the instance, or ``None`` if unknown (or purged)."""
        await self._ready()
        return self._view.get(instance_id)

    async def wait_for_status(
        self,
        instance_id: str,
        timeout: float | timedelta | None = 60,
        *,
        execution_id: str | None = None,
    ) -> OrchestrationStatus:
        """Wait until the instance is Completed, Failed or Terminated.

        See :meth:`Client.wait_for_status`.
        """
        limit = seconds(timeout)
        await self.start()
        return await self._view.wait_for_async(
            instance_id,
            self._core.wait_predicate(instance_id, execution_id),
            limit,
            what="a terminal status",
        )

    async def wait_for_completion(
        self,
        instance_id: str,
        timeout: float | timedelta | None = 60,
        *,
        raise_on_failure: bool = True,
    ) -> Any:
        """Wait for the instance to finish and return its output.

        See :meth:`Client.wait_for_completion`.
        """
        status = await self.wait_for_status(instance_id, timeout)
        return self._core.completion_result(status, raise_on_failure)

    async def list_instances(
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

        See :meth:`Client.list_instances`.
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
        await self._ready()
        return self._view.page(query)

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The typed history events of the instance's current generation, oldest first.

        Runs the changelog scan in a thread; see :meth:`Client.get_history`.
        """
        iid = check_instance_id(instance_id)
        await self.start()
        return await asyncio.to_thread(self._read_history, iid)

    def _read_history(self, instance_id: str) -> list[HistoryEvent]:
        with self._transport.sync_transport() as transport:
            return read_history(transport, self._core.topics, instance_id)

    # -- entities ------------------------------------------------------------------

    async def signal_entity(self, entity_id: EntityId, operation: str, input: Any = None) -> None:
        """Send a one-way operation to an entity (see :meth:`Client.signal_entity`)."""
        await self.start()
        await self._send(
            signal_record(
                self._core.settings,
                self._core.registry,
                entity_id,
                operation,
                input,
                self._partitions,
            )
        )

    async def delete_entity(self, entity_id: EntityId) -> None:
        """Delete an entity's state (see :meth:`Client.delete_entity`)."""
        await self.start()
        await self._send(
            delete_record(self._core.settings, self._core.registry, entity_id, self._partitions)
        )

    async def get_entity(self, entity_id: EntityId) -> EntityMetadata | None:
        """The entity's state and last modification time (see :meth:`Client.get_entity`)."""
        view = await self._entities_ready()
        record = view.get(str(entity_id))
        return None if record is None else entity_metadata(self._core.registry, record)

    async def list_entities(
        self,
        *,
        name: str | None = None,
        page_size: int = 100,
        continuation: str | None = None,
    ) -> Page[EntityMetadata]:
        """One page of entities that have a state (see :meth:`Client.list_entities`)."""
        view = await self._entities_ready()
        return entity_page(
            self._core.registry,
            view.all(),
            name=name,
            page_size=page_size,
            continuation=continuation,
        )

    async def _entities_ready(self) -> EntityView:
        await self.start()
        if self._entity_view is None:
            async with self._start_lock:
                if self._entity_view is None:
                    view = EntityView()
                    self._entity_feeder = await self._transport.feed(
                        view, self._core.topics.entities
                    )
                    self._entity_view = view
        await self._entity_view.wait_ready_async(VIEW_READY_TIMEOUT)
        return self._entity_view

    # -- plumbing ------------------------------------------------------------------

    async def _ready(self) -> None:
        if self._started and self._view.ready:
            return  # the common case: no lock, no await
        await self.start()
        await self._view.wait_ready_async(VIEW_READY_TIMEOUT)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("this client is closed; create a new one")

    async def _send(self, out: OutgoingRecord) -> None:
        await self._transport.send_all([out])

    async def close(self) -> None:
        """Stop the status view and the producer (and the transport if owned)."""
        if self._closed:
            return
        self._closed = True
        self._view.fail(TransportError("the client was closed while waiting"))
        if self._entity_view is not None:
            self._entity_view.fail(TransportError("the client was closed while waiting"))
        await self._release()

    async def _release(self) -> None:
        """Stop the feeders and close the transport."""
        try:
            for feeder in (self._feeder, self._entity_feeder):
                if feeder is not None:
                    await feeder.stop()
        finally:
            self._feeder = self._entity_feeder = None
            await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
