"""Pick the transport a bootstrap string names: ``memory://[name]`` or Kafka servers."""

from __future__ import annotations

from collections.abc import Mapping

from durafka.transport.base import Transport
from durafka.transport.memory import SCHEME, MemoryBroker, MemoryTransport

__all__ = ["open_transport"]


def open_transport(bootstrap: str, client_config: Mapping[str, str] | None = None) -> Transport:
    """The transport for ``bootstrap``.

    Args:
        bootstrap: ``"memory://"`` (the process's default in-memory broker),
            ``"memory://name"`` (another in-memory broker), or Kafka
            ``bootstrap.servers`` such as ``"127.0.0.1:9092"``.
        client_config: librdkafka settings for every Kafka client (e.g. security);
            ignored by ``memory://``.

    Returns:
        A :class:`~durafka.transport.memory.MemoryTransport` or a
        :class:`~durafka.transport.kafka.KafkaTransport`.
    """
    if bootstrap.startswith(SCHEME):
        return MemoryTransport(MemoryBroker.get(bootstrap[len(SCHEME) :]))
    # Imported here so that embedded mode never loads the Kafka client layer.
    from durafka.transport.kafka import KafkaTransport

    return KafkaTransport(bootstrap, client_config)
