"""How large one Kafka record may be, counted the way librdkafka and the broker count it.

librdkafka refuses a record (``MSG_SIZE_TOO_LARGE``, at ``produce()``) when its key,
value and serialized headers plus :data:`RECORD_OVERHEAD` exceed the producer's
``message.max.bytes`` (1,000,000 by default). The broker refuses a record batch
larger than the topic's ``max.message.bytes`` (1,048,588 by default), which
counts the batch header (:data:`BATCH_OVERHEAD`) too. The ``memory://`` broker
applies both rules, so code that produces too much fails there as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from durafka.topology import load_hub_spec

__all__ = [
    "BATCH_OVERHEAD",
    "DEFAULT_MESSAGE_MAX_BYTES",
    "DEFAULT_TOPIC_MAX_MESSAGE_BYTES",
    "RECORD_OVERHEAD",
    "Headers",
    "RecordLimits",
    "headers_size",
    "max_record_size",
    "record_size",
]

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka record headers: ``(name, value)`` pairs in order, names may repeat."""

#: librdkafka's default ``message.max.bytes``.
DEFAULT_MESSAGE_MAX_BYTES: Final = 1_000_000
#: The broker's default ``max.message.bytes`` of a topic.
DEFAULT_TOPIC_MAX_MESSAGE_BYTES: Final = 1_048_588
#: What librdkafka adds to key, value and headers when it checks a record
#: (``RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD``: length, attributes, timestamp and offset
#: deltas, key and value lengths, header count, each at its largest varint size).
RECORD_OVERHEAD: Final = 36
#: The header of a record batch (``RD_KAFKAP_MSGSET_V2_SIZE``), counted by the broker.
BATCH_OVERHEAD: Final = 61


def _varint_size(n: int) -> int:
    """Bytes of the zig-zag varint of ``n`` (Kafka's record format)."""
    z = (n << 1) ^ (n >> 63)
    size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size


def headers_size(headers: Headers | None) -> int:
    """Bytes the headers take in a record (name and value, each with its length)."""
    if not headers:
        return 0
    total = 0
    for name, value in headers:
        encoded = name.encode()
        total += _varint_size(len(encoded)) + len(encoded)
        total += _varint_size(-1) if value is None else _varint_size(len(value)) + len(value)
    return total


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None = None) -> int:
    """The size librdkafka compares with ``message.max.bytes`` for this record."""
    size = RECORD_OVERHEAD
    if key is not None:
        size += len(key)
    if value is not None:
        size += len(value)
    return size + headers_size(headers) if headers else size


def max_record_size(
    producer_config: Mapping[str, Any], topic_config: Mapping[str, Any] | None = None
) -> int:
    """The largest :func:`record_size` a producer with this config can write to a topic.

    Args:
        producer_config: the producer's librdkafka settings (``message.max.bytes``).
        topic_config: the topic's configs (``max.message.bytes``), if known.
    """
    producer = int(producer_config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
    topic = int((topic_config or {}).get("max.message.bytes", DEFAULT_TOPIC_MAX_MESSAGE_BYTES))
    return min(producer, topic - BATCH_OVERHEAD)


class RecordLimits:
    """The largest record one producer may write to each topic (see :func:`max_record_size`).

    Args:
        producer_config: the producer's librdkafka settings (``message.max.bytes``).
        topic_configs: each known topic's configs (``max.message.bytes``); a topic
            not listed has the broker's default.
    """

    __slots__ = ("_by_topic", "_default", "smallest")

    def __init__(
        self,
        producer_config: Mapping[str, Any],
        topic_configs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._default = max_record_size(producer_config)
        self._by_topic = {
            topic: max_record_size(producer_config, config)
            for topic, config in (topic_configs or {}).items()
        }
        #: The smallest limit of any topic: a record within it fits everywhere.
        self.smallest = min([self._default, *self._by_topic.values()])

    @classmethod
    def for_hub(cls, task_hub: str, producer_config: Mapping[str, Any]) -> RecordLimits:
        """The limits of a producer with ``producer_config`` on the topics of ``task_hub``.

        A topic's ``max.message.bytes`` comes from the topology spec when it sets one
        (``durafka topology apply`` and ``App.ensure_topics`` keep the broker equal to
        it), else it is the broker's default.
        """
        configs = {spec.name: spec.config for spec in load_hub_spec(task_hub)}
        return cls(producer_config, configs)

    def of(self, topic: str) -> int:
        """The largest :func:`record_size` of a record to ``topic``."""
        return self._by_topic.get(topic, self._default)

    def room(self, topic: str, key: bytes | None) -> int:
        """The largest value (in bytes) a record to ``topic`` with ``key`` (no headers) may have."""
        return self.of(topic) - record_size(key, None)

    def excess(self, topic: str, key: bytes | None, value: bytes | None) -> int:
        """How many bytes a record is over the limit of ``topic`` (0 or less: it fits)."""
        return record_size(key, value) - self.of(topic)
