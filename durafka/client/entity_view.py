"""The entity view: ``H.entities`` materialised into a dict, and the client's entity helpers.

``H.entities`` is compacted and keyed by entity id (``@<name>@<key>``), so
reading it from the beginning yields the latest record of every entity; a
``None`` value (a tombstone) means the entity was deleted. The same feeders as
the status view fill it (:class:`~durafka.transport.feeder.ThreadFeeder`,
:class:`~durafka.transport.aiokafka.AioKafkaFeeder`); clients start them
only when an entity is first read, so an app without entities never reads the
topic.

The functions below are the I/O-free half of the clients' entity calls: the
signal record, the metadata of a record, and paging.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable
from typing import Any

from durafka.client._common import Page, now_ms
from durafka.client.compacted_view import CompactedView
from durafka.codec.payload import decode_payload, encode_payload
from durafka.codec.records import EntityRecord, decode_entity, encode_message
from durafka.entities import DELETE_OPERATION, EntityId, EntityMetadata
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.settings import Settings
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord

__all__ = ["EntityView", "delete_record", "entity_metadata", "entity_page", "signal_record"]

log = logging.getLogger(__name__)


class EntityView(CompactedView[EntityRecord]):
    """The latest record of every entity, fed from ``H.entities`` by a feeder.

    Thread-safe: a feeder applies batches from its thread or task while any
    number of threads and event loops read.
    """

    _record_noun = "entity"
    _topic_noun = "entities"
    _log = log

    def _decode(self, value: bytes) -> EntityRecord:
        return decode_entity(value)

    def get(self, entity_id: str) -> EntityRecord | None:
        """The latest record of ``entity_id`` (``@<name>@<key>``), None if unknown or deleted."""
        return self._get(entity_id)

    def all(self) -> list[EntityRecord]:
        """A snapshot of every known entity record (unordered)."""
        return self._all()


# -- the I/O-free half of the clients' entity calls ----------------------------------------------


def signal_record(
    settings: Settings,
    registry: Registry,
    entity_id: EntityId,
    operation: str,
    input: Any,
    partitions: int,
) -> OutgoingRecord:
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
    return OutgoingRecord(
        HubTopics(settings.task_hub).orchestrations,
        partition_for(key, partitions),
        key,
        encode_message(target, event),
    )


def delete_record(
    settings: Settings, registry: Registry, entity_id: EntityId, partitions: int
) -> OutgoingRecord:
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
