"""Which of ``Settings.client_config`` reaches which Kafka client.

Keys are librdkafka setting names. As in Kafka Streams, a ``producer.``,
``consumer.`` or ``admin.`` prefix sends a setting to that kind of client only,
where it wins over the same setting without a prefix; a setting without a
prefix goes to every client. Group settings such as ``session.timeout.ms``
belong under ``consumer.``: librdkafka warns (CONFWARN) about every consumer
setting a producer is given.

Example:
    >>> config = {
    ...     "security.protocol": "ssl",
    ...     "consumer.session.timeout.ms": "6000",
    ...     "producer.linger.ms": "5",
    ... }
    >>> for_client(config, "producer")
    {'security.protocol': 'ssl', 'linger.ms': '5'}
    >>> for_client(config, "consumer")
    {'security.protocol': 'ssl', 'session.timeout.ms': '6000'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

__all__ = ["ClientKind", "for_client"]

#: The kinds of Kafka client, each the prefix of its own settings.
ClientKind = Literal["producer", "consumer", "admin"]
_KINDS: frozenset[str] = frozenset(get_args(ClientKind))


def for_client(client_config: Mapping[str, str], kind: ClientKind) -> dict[str, str]:
    """The settings of ``client_config`` that a ``kind`` client gets, prefixes removed.

    Args:
        client_config: ``Settings.client_config``, prefixed and unprefixed keys.
        kind: the client being configured.
    """
    shared: dict[str, str] = {}
    own: dict[str, str] = {}
    for key, value in client_config.items():
        prefix, dot, name = key.partition(".")
        if not dot or prefix not in _KINDS:
            shared[key] = value
        elif prefix == kind:
            own[name] = value
    return {**shared, **own}
