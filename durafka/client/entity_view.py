"""The entity view: ``H.entities`` materialised into a dict, and the client's entity helpers.

``H.entities`` is compacted and keyed by entity id (``@<name>@<key>``), so
reading it from the beginning yields the latest record of every entity; a
``None`` value (a tombstone) means the entity was deleted. The same feeders as
the status view fill it (:class:`~durafka.client.status_view.ThreadStatusFeeder`,
:class:`~durafka.client.status_view.AioKafkaStatusFeeder`); clients start them
only when an entity is first read, so an app without entities never reads the
topic.

The functions below are the I/O-free half of the clients' entity calls: the
signal record, the metadata of a record, and paging.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from durafka.client._common import Outgoing, Page, now_ms
from durafka.codec.payload import decode_payload, encode_payload
from durafka.codec.records import EntityRecord, decode_entity, encode_message
from durafka.entities import DELETE_OPERATION, EntityId, EntityMetadata
from durafka.errors import DurafkaError, WaitTimeoutError
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.settings import Settings
from durafka.topology import HubTopics

__all__ = ["EntityView", "delete_record", "entity_metadata", "entity_page", "signal_record"]

log = logging.getLogger(__name__)


class EntityView:
    """The latest record of every entity, fed from ``H.entities`` by a feeder.

    Thread-safe: a feeder applies batches from its thread or task while any
    number of threads and event loops read.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._records: dict[str, EntityRecord] = {}
        self._ready = False
        self._error: DurafkaError | None = None
        self._ready_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- feeding -------------------------------------------------------------------

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Apply ``(key, value)`` records of ``H.entities`` in topic order (None: deleted)."""
        updates: list[tuple[str, EntityRecord | None]] = []
        for key, value in records:
            if key is None:
                log.warning("skipping an entity record without a key (not written by durafka)")
                continue
            try:
                updates.append((key.decode(), None if value is None else decode_entity(value)))
            except Exception as exc:  # any writer's garbage: one bad record must not stop the view
                log.warning("skipping an undecodable entity record (key %r): %s", key, exc)
        if not updates:
            return
        with self._cond:
            for entity_id, record in updates:
                if record is None:
                    self._records.pop(entity_id, None)
                else:
                    self._records[entity_id] = record
            self._cond.notify_all()

    def mark_ready(self) -> None:
        """Called by the feeder once it has caught up with the start-time high watermarks."""
        with self._cond:
            self._ready = True
            self._settle_waiters(None)
            self._cond.notify_all()

    def fail(self, error: DurafkaError) -> None:
        """Stop the view: every current and future wait raises ``error``."""
        with self._cond:
            if self._error is not None:
                return
            self._error = error
            self._settle_waiters(error)
            self._cond.notify_all()

    def _settle_waiters(self, error: DurafkaError | None) -> None:
        for loop, future in self._ready_waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop is gone
                loop.call_soon_threadsafe(_settle, future, error)
        self._ready_waiters.clear()

    # -- reading -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the view has caught up with ``H.entities`` as of its start."""
        return self._ready

    def get(self, entity_id: str) -> EntityRecord | None:
        """The latest record of ``entity_id`` (``@<name>@<key>``), None if unknown or deleted."""
        with self._cond:
            return self._records.get(entity_id)

    def all(self) -> list[EntityRecord]:
        """A snapshot of every known entity record (unordered)."""
        with self._cond:
            return list(self._records.values())

    def __len__(self) -> int:
        with self._cond:
            return len(self._records)

    def wait_ready(self, timeout: float | None) -> None:
        """Block until the view is ready.

        Raises:
            WaitTimeoutError: not caught up within ``timeout`` seconds.
            DurafkaError: the feeder failed (the view's error).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._error is not None:
                    raise self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(_not_ready_message(timeout))
                self._cond.wait(remaining)

    async def wait_ready_async(self, timeout: float | None) -> None:
        """:meth:`wait_ready` for asyncio: the feeder resolves a future, nothing polls."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._ready:
                return
            if self._error is not None:
                raise self._error
            future: asyncio.Future[None] = loop.create_future()
            self._ready_waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise WaitTimeoutError(_not_ready_message(timeout)) from None
        finally:
            with self._cond:
                if (loop, future) in self._ready_waiters:
                    self._ready_waiters.remove((loop, future))


def _settle(future: asyncio.Future[None], error: DurafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _not_ready_message(timeout: float | None) -> str:
    return (
        f"the entity view did not catch up with the entities topic within {timeout}s; "
        "is the broker reachable and the topic readable?"
    )


# -- the I/O-free half of the clients' entity calls ----------------------------------------------


def signal_record(
    settings: Settings,
    registry: Registry,
    entity_id: EntityId,
    operation: str,
    input: Any,
    partitions: int,
) -> Outgoing:
    """The ENTITY_OPERATION record of a signal (no caller, no response).

    Raises:
        TypeError: ``entity_id`` is not an :class:`EntityId`.
        ValueError: ``operation`` is empty.
        PayloadTooLargeError: the encoded input exceeds ``max_payload_bytes``.
        SerializationError: the input cannot be encoded for the operation's type.
    """
    if not isinstance(entity_id, EntityId):
        raise TypeError(f"entity_id must be a durafka.EntityId, got {entity_id!r}")
    if not isinstance(operation, str) or not operation:
        raise ValueError(f"operation must be a non-empty string, got {operation!r}")
    payload: bytes | None = None
    if input is not None:
        definition = registry.entities.get(entity_id.name)
        op = definition.operation(operation) if definition is not None else None
        payload = encode_payload(
            input,
            op.input_adapter if op is not None else None,
            max_bytes=settings.max_payload_bytes,
            what=f"input of {operation!r} for entity {entity_id}",
        )
    target = str(entity_id)
    key = target.encode()
    event = HistoryEvent(EventKind.ENTITY_OPERATION, now_ms(), name=operation, payload=payload)
    return Outgoing(
        HubTopics(settings.task_hub).orchestrations,
        partition_for(key, partitions),
        key,
        encode_message(target, event),
    )


def delete_record(
    settings: Settings, registry: Registry, entity_id: EntityId, partitions: int
) -> Outgoing:
    """The record of the built-in delete operation."""
    return signal_record(settings, registry, entity_id, DELETE_OPERATION, None, partitions)


def entity_metadata(registry: Registry, record: EntityRecord) -> EntityMetadata | None:
    """What ``get_entity`` returns for a record: None if the entity has no state.

    The state is decoded with the entity's state type when ``registry`` has the
    entity as a class, else as plain JSON values.
    """
    if record.state is None:
        return None
    definition = registry.entities.get(record.name)
    adapter = definition.state_adapter if definition is not None else None
    entity_id = EntityId(record.name, record.key)
    return EntityMetadata(
        entity_id,
        decode_payload(record.state, adapter, what=f"state of entity {entity_id}"),
        record.state,
        record.last_modified_at,
        record.locked_by,
        len(record.queue),
        record.error_count,
        record.last_error,
    )


def entity_page(
    registry: Registry,
    records: Iterable[EntityRecord],
    *,
    name: str | None,
    page_size: int,
    continuation: str | None,
) -> Page[EntityMetadata]:
    """Entities with state, optionally of one name, ordered by entity id, one page.

    The continuation token is the last entity id of the page, so paging is
    stable while entities are added: the next page starts right after it.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    after = _decode_continuation(continuation) if continuation is not None else None
    selected = sorted(
        (
            r
            for r in records
            if r.state is not None
            and (name is None or r.name == name)
            and (after is None or _sort_key(r) > after)
        ),
        key=_sort_key,
    )
    page = selected[:page_size]
    items = [m for r in page if (m := entity_metadata(registry, r)) is not None]
    token = _encode_continuation(page[-1]) if len(selected) > page_size else None
    return Page(items, token)


def _sort_key(record: EntityRecord) -> str:
    return f"@{record.name}@{record.key}"


def _encode_continuation(last: EntityRecord) -> str:
    return base64.urlsafe_b64encode(_sort_key(last).encode()).decode("ascii")


def _decode_continuation(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (ValueError, UnicodeError, binascii.Error):
        raise ValueError(
            f"invalid continuation token {token!r}: pass the value of a previous Page.continuation"
        ) from None
