"""The asyncio client: the same calls as :class:`~durafka.client.sync.Client`, awaitable.

On Kafka it speaks aiokafka (an idempotent ``AIOKafkaProducer`` and an
aiokafka status feeder task), so nothing blocks the event loop. On
``memory://`` (or with an explicit transport) it uses the transport's producer
and a status feeder thread; waits are still futures resolved by that thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol

from durafka.client._common import (
    VIEW_READY_TIMEOUT,
    ClientCore,
    Outgoing,
    Page,
    aiokafka_options,
    check_instance_id,
    is_terminal,
    list_page,
    purge_candidates,
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
from durafka.client.status_view import AioKafkaStatusFeeder, StatusView, ThreadStatusFeeder
from durafka.entities import EntityId, EntityMetadata
from durafka.errors import TransportError
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.settings import Settings
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.transport.base import Producer, Transport
from durafka.transport.factory import open_transport
from durafka.transport.memory import MemoryTransport

__all__ = ["AsyncClient"]

#: Seconds to wait for the broker to acknowledge a record before giving up.
DELIVERY_TIMEOUT = 30.0


class _Backend(Protocol):
    """How an :class:`AsyncClient` writes records and feeds its status view."""

    orchestration_partitions: int
    #: The transport to read the changelog with (None: open one per history read).
    transport: Transport | None

    async def start(self) -> None: ...
    async def start_entity_feeder(self, view: EntityView) -> None: ...
    async def send(self, out: Outgoing) -> None: ...
    async def send_all(self, outs: list[Outgoing]) -> None: ...
    async def close(self) -> None: ...


class _DeliveryPump:
    """Serves a Kafka producer's delivery reports on a thread; settles futures in batches.

    ``produce()`` never blocks the event loop; this thread polls the producer,
    collects the reports of a poll and hands them to the loop in one
    ``call_soon_threadsafe`` (a thread hop per poll, not per record or per call).
    """

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._reports: deque[tuple[asyncio.Future[None], Outgoing, Any]] = deque()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="durafka-client-delivery", daemon=True
        )
        self._thread.start()

    async def send_all(self, outs: list[Outgoing]) -> None:
        """Produce ``outs`` and wait until the broker acknowledged each of them."""
        loop, producer = self._loop, self._producer
        report = self._reports.append  # deque.append is atomic: no lock needed
        futures: list[asyncio.Future[None]] = []
        for out in outs:
            delivered: asyncio.Future[None] = loop.create_future()
            futures.append(delivered)
            producer.produce(
                out.topic,
                out.partition,
                out.key,
                out.value,
                on_delivery=_reporter(report, delivered, out),
            )
        if not futures:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=DELIVERY_TIMEOUT)
        except TimeoutError:
            out = outs[-1]
            raise TransportError(
                f"the broker did not acknowledge {sum(not f.done() for f in futures)} of "
                f"{len(outs)} records to {out.topic} within {DELIVERY_TIMEOUT}s; they may "
                "or may not have been written"
            ) from None

    def _run(self) -> None:
        reports = self._reports
        while not self._stopped.is_set():
            try:
                self._producer.poll(0.05)
            except Exception:  # a closed producer: the client is closing
                return
            if reports:
                batch = []
                while reports:
                    batch.append(reports.popleft())
                try:
                    self._loop.call_soon_threadsafe(_settle, batch)
                except RuntimeError:  # the loop is closed
                    return

    def stop(self) -> None:
        """Stop polling (the producer's close delivers what is left)."""
        self._stopped.set()
        self._thread.join(5.0)


def _reporter(
    report: Callable[[tuple[asyncio.Future[None], Outgoing, Any]], None],
    future: asyncio.Future[None],
    out: Outgoing,
) -> Callable[[Any, Any], None]:
    def on_delivery(err: Any, _record: Any) -> None:
        report((future, out, err))

    return on_delivery


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(batch: list[tuple[asyncio.Future[None], Outgoing, Any]]) -> None:
    for future, out, err in batch:
        if future.done():  # cancelled by its caller
            continue
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(
                TransportError(f"writing to {out.topic}[{out.partition}] failed: {err}")
            )


class _TransportBackend:
    """A transport's producer plus a feeder thread (``memory://``, or a given transport)."""

    def __init__(
        self, core: ClientCore, view: StatusView, transport: Transport, owns: bool
    ) -> None:
        self._core = core
        self._transport = transport
        self.transport: Transport | None = transport
        self._owns = owns
        self._feeder = ThreadStatusFeeder(view, transport, core.topics.status)
        self._entity_feeder: ThreadStatusFeeder | None = None
        self._producer: Producer | None = None
        self._pump: _DeliveryPump | None = None
        self.orchestration_partitions = 0

    async def start(self) -> None:
        self._feeder.start()
        self.orchestration_partitions = await asyncio.to_thread(
            self._transport.partition_count, self._core.topics.orchestrations
        )
        self._producer = self._transport.producer()
        if not isinstance(self._transport, MemoryTransport):
            self._pump = _DeliveryPump(self._producer, asyncio.get_running_loop())

    async def start_entity_feeder(self, view: EntityView) -> None:
        feeder = ThreadStatusFeeder(view, self._transport, self._core.topics.entities)
        feeder.start()
        self._entity_feeder = feeder

    async def send(self, out: Outgoing) -> None:
        await self.send_all([out])

    async def send_all(self, outs: list[Outgoing]) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        if isinstance(self._transport, MemoryTransport):
            # In process: produce and flush never block, so no thread hop is needed
            # (it cost more than the rest of start_new together).
            errors: list[Any] = []

            def note(err: Any, _record: Any) -> None:
                if err is not None:
                    errors.append(err)

            for out in outs:
                producer.produce(out.topic, out.partition, out.key, out.value, on_delivery=note)
            producer.flush(DELIVERY_TIMEOUT)
            if errors:
                raise TransportError(f"writing to {outs[0].topic} failed: {errors[0]}")
            return
        pump = self._pump
        assert pump is not None, "start() first"
        await pump.send_all(outs)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.stop()
        await asyncio.to_thread(self._feeder.stop)
        if self._entity_feeder is not None:
            await asyncio.to_thread(self._entity_feeder.stop)
        try:
            if self._producer is not None:
                await asyncio.to_thread(self._producer.flush, DELIVERY_TIMEOUT)
                self._producer.close()
        finally:
            if self._owns:
                self._transport.close()


class _AioKafkaBackend:
    """An idempotent ``AIOKafkaProducer`` plus the aiokafka status feeder."""

    def __init__(self, core: ClientCore, view: StatusView) -> None:
        self._core = core
        self._view = view
        self._bootstrap = core.settings.bootstrap_servers
        self._producer_options = aiokafka_options(core.settings.client_config, "producer")
        self._consumer_options = aiokafka_options(core.settings.client_config, "consumer")
        self._producer: Any = None
        self._feeder: AioKafkaStatusFeeder | None = None
        self._entity_feeder: AioKafkaStatusFeeder | None = None
        self.orchestration_partitions = 0
        # aiokafka has no manual-assign read_committed scan to the high watermark like
        # the transports' consumers; history reads open a Kafka transport per call.
        self.transport: Transport | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        from aiokafka import AIOKafkaProducer

        options = {"request_timeout_ms": int(DELIVERY_TIMEOUT * 1000), **self._producer_options}
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,  # 1 ms of lingering was 1 ms of every start's latency
            **options,
        )
        await producer.start()
        self._producer = producer
        topics = self._core.topics
        self.orchestration_partitions = await self._partitions(topics.orchestrations)
        feeder = AioKafkaStatusFeeder(
            self._view,
            topics.status,
            await self._partitions(topics.status),
            self._bootstrap,
            self._consumer_options,
        )
        await feeder.start()
        self._feeder = feeder

    async def start_entity_feeder(self, view: EntityView) -> None:
        topic = self._core.topics.entities
        feeder = AioKafkaStatusFeeder(
            view, topic, await self._partitions(topic), self._bootstrap, self._consumer_options
        )
        await feeder.start()
        self._entity_feeder = feeder

    async def _partitions(self, topic: str) -> int:
        from aiokafka.errors import UnknownTopicOrPartitionError

        try:
            return len(await self._producer.partitions_for(topic))
        except UnknownTopicOrPartitionError:
            raise TransportError(
                f"topic {topic!r} is not available on {self._bootstrap}; create the task "
                "hub's topics first (Transport.ensure_topics)"
            ) from None

    async def send(self, out: Outgoing) -> None:
        await self.send_all([out])

    async def send_all(self, outs: list[Outgoing]) -> None:
        from aiokafka.errors import KafkaError, KafkaTimeoutError

        pending: list[asyncio.Future[Any]] = []
        out = outs[0] if outs else None
        try:
            # send() only enqueues (records queued while a request is in flight share the
            # next one, so linger_ms=0 costs no throughput); the futures resolve on the ack,
            # or fail once aiokafka expires the batch (request_timeout_ms, DELIVERY_TIMEOUT):
            # no timer of our own per call.
            for out in outs:
                pending.append(
                    await self._producer.send(
                        out.topic, value=out.value, key=out.key, partition=out.partition
                    )
                )
            for future in pending:
                await future
        except KafkaTimeoutError:
            assert out is not None
            raise TransportError(
                f"the broker did not acknowledge the records to {out.topic} within "
                f"{DELIVERY_TIMEOUT}s; they may or may not have been written"
            ) from None
        except KafkaError as exc:
            assert out is not None
            raise TransportError(f"writing to {out.topic}[{out.partition}] failed: {exc}") from exc
        finally:
            for future in pending:
                if not future.done():  # we stop waiting: retrieve its outcome, unlogged
                    future.add_done_callback(_ignore_outcome)

    async def close(self) -> None:
        try:
            if self._feeder is not None:
                feeder, self._feeder = self._feeder, None
                await feeder.stop()
            if self._entity_feeder is not None:
                entity_feeder, self._entity_feeder = self._entity_feeder, None
                await entity_feeder.stop()
        finally:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()


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
        self._view = StatusView()
        self._backend: _Backend
        if transport is not None:
            self._backend = _TransportBackend(self._core, self._view, transport, owns=False)
        elif settings.is_memory:
            opened = open_transport(settings.bootstrap_servers, settings.client_config)
            self._backend = _TransportBackend(self._core, self._view, opened, owns=True)
        else:
            self._backend = _AioKafkaBackend(self._core, self._view)
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        # Started by the first entity read: most clients never read H.entities.
        self._entity_view: EntityView | None = None

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
            if not self._started:
                await self._backend.start()
                self._started = True

    # -- writing -------------------------------------------------------------------

    async def start_new(
        self,
        orchestration: Callable[..., Any] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
    ) -> str:
        """Start an orchestration instance (see :meth:`Client.start_new`)."""
        iid, name, payload = self._core.prepare_start(orchestration, input, instance_id)
        await self._ready()
        self._core.check_can_start(iid, self._view.get(iid))
        partitions = self._backend.orchestration_partitions
        await self._backend.send(self._core.start_record(iid, name, payload, partitions))
        self._core.remember_start(iid)
        return iid

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
        partitions = self._backend.orchestration_partitions
        await self._backend.send_all(
            [self._core.control_record(i, EventKind.EXECUTION_PURGED, partitions) for i in ids]
        )
        return len(ids)

    async def _control(
        self,
        instance_id: str,
        kind: EventKind,
        *,
        name: str | None = None,
        payload: bytes | None = None,
    ) -> None:
        await self.start()
        partitions = self._backend.orchestration_partitions
        await self._backend.send(
            self._core.control_record(instance_id, kind, partitions, name=name, payload=payload)
        )

    # -- reading -------------------------------------------------------------------

    async def get_status(self, instance_id: str) -> OrchestrationStatus | None:
        """The latest status of the instance, or ``None`` if unknown (or purged)."""
        await self._ready()
        return self._view.get(instance_id)

    async def wait_for_status(
        self, instance_id: str, timeout: float | timedelta | None = 60
    ) -> OrchestrationStatus:
        """Wait until the instance is Completed, Failed or Terminated.

        See :meth:`Client.wait_for_status`.
        """
        limit = seconds(timeout)
        await self.start()
        return await self._view.wait_for_async(
            instance_id, is_terminal, limit, what="a terminal status"
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
        page_size: int = 100,
        continuation: str | None = None,
    ) -> Page[OrchestrationStatus]:
        """One page of instances, ordered by (creation time, instance id).

        See :meth:`Client.list_instances`.
        """
        await self._ready()
        return list_page(
            self._view.all(),
            status=status,
            name=name,
            created_from=created_from,
            created_to=created_to,
            page_size=page_size,
            continuation=continuation,
        )

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The typed history events of the instance's current generation, oldest first.

        Runs the changelog scan in a thread; see :meth:`Client.get_history`.
        """
        iid = check_instance_id(instance_id)
        await self.start()
        transport = self._backend.transport
        if transport is not None:
            return await asyncio.to_thread(read_history, transport, self._core.topics, iid)
        return await asyncio.to_thread(self._read_history_once, iid)

    def _read_history_once(self, instance_id: str) -> list[HistoryEvent]:
        settings = self._core.settings
        transport = open_transport(settings.bootstrap_servers, settings.client_config)
        try:
            return read_history(transport, self._core.topics, instance_id)
        finally:
            transport.close()

    # -- entities ------------------------------------------------------------------

    async def signal_entity(self, entity_id: EntityId, operation: str, input: Any = None) -> None:
        """Send a one-way operation to an entity (see :meth:`Client.signal_entity`)."""
        await self.start()
        await self._backend.send(
            signal_record(
                self._core.settings,
                self._core.registry,
                entity_id,
                operation,
                input,
                self._backend.orchestration_partitions,
            )
        )

    async def delete_entity(self, entity_id: EntityId) -> None:
        """Delete an entity's state (see :meth:`Client.delete_entity`)."""
        await self.start()
        await self._backend.send(
            delete_record(
                self._core.settings,
                self._core.registry,
                entity_id,
                self._backend.orchestration_partitions,
            )
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
                    await self._backend.start_entity_feeder(view)
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

    async def close(self) -> None:
        """Stop the status view and the producer (and the transport if owned)."""
        if self._closed:
            return
        self._closed = True
        self._view.fail(TransportError("the client was closed while waiting"))
        if self._entity_view is not None:
            self._entity_view.fail(TransportError("the client was closed while waiting"))
        await self._backend.close()  # also releases what a failed start() left open

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
