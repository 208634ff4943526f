"""Pick the transport a bootstrap string names: ``memory://[name]`` or Kafka servers."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from durafka.transport.base import AsyncTransport, Transport
from durafka.transport.memory import SCHEME, MemoryBroker, MemoryTransport
from durafka.transport.threaded import ThreadedAsyncTransport

__all__ = ["open_async_transport", "open_transport"]

log = logging.getLogger(__name__)


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


def open_async_transport(
    bootstrap: str,
    client_config: Mapping[str, str] | None = None,
    transport: Transport | None = None,
) -> AsyncTransport:
    """The asyncio client's transport.

    Args:
        bootstrap: as for :func:`open_transport`.
        client_config: librdkafka settings for every Kafka client.
        transport: an open transport to use (and leave open) instead.

    Returns:
        With ``transport``, or on ``memory://``: a
        :class:`~durafka.transport.threaded.ThreadedAsyncTransport`; on Kafka: a
        :class:`~durafka.transport.aiokafka.AioKafkaTransport`, or, when a
        ``client_config`` setting has no exact aiokafka equivalent (OAUTHBEARER,
        a PKCS#12 key store, ...), a ``ThreadedAsyncTransport`` over a
        :class:`~durafka.transport.kafka.KafkaTransport`: every client accepts
        what the confluent-kafka clients accept.
    """
    if transport is not None:
        return ThreadedAsyncTransport(transport, owns=False)
    if bootstrap.startswith(SCHEME):
        return ThreadedAsyncTransport(open_transport(bootstrap, client_config), owns=True)
    from durafka.transport.aiokafka import AioKafkaTransport, AiokafkaUnsupportedError

    try:
        return AioKafkaTransport(bootstrap, client_config or {})
    except AiokafkaUnsupportedError as exc:
        log.info(
            "the asyncio client uses librdkafka on threads, not aiokafka: aiokafka has no "
            "exact equivalent of %s",
            exc,
        )
        return ThreadedAsyncTransport(open_transport(bootstrap, client_config), owns=True)
