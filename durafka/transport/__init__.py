"""Transports: the Kafka client layer (``kafka``) and its in-process twin (``memory``).

Both implement the protocols in :mod:`durafka.transport.base`, so the processor,
the worker and the clients run unchanged on either. Use :func:`open_transport`
to get one from a bootstrap string (``"memory://"`` or ``"host:port,..."``).
"""

from durafka.transport.base import (
    Consumer,
    Producer,
    Record,
    TopicPartition,
    TransactionalProducer,
    Transport,
)
from durafka.transport.factory import open_transport

__all__ = [
    "Consumer",
    "Producer",
    "Record",
    "TopicPartition",
    "TransactionalProducer",
    "Transport",
    "open_transport",
]
