"""Kafka transport details that need no broker: settings and transport selection."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from durafka.errors import ConfigurationError
from durafka.transport import open_transport
from durafka.transport.kafka import KafkaTransport

# Nothing listens there; creating clients does not connect.
_NOWHERE = "127.0.0.1:1"


def test_open_transport_picks_kafka_for_host_port() -> None:
    transport = open_transport(_NOWHERE, {"client.id": "x"})
    assert isinstance(transport, KafkaTransport)
    assert transport.bootstrap == _NOWHERE


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("isolation.level", "read_uncommitted"),
        ("enable.auto.commit", "true"),
        ("enable.auto.offset.store", "true"),
    ],
)
def test_consumer_refuses_to_weaken_exactly_once(setting: str, value: str) -> None:
    transport = KafkaTransport(_NOWHERE)
    with pytest.raises(ConfigurationError, match=re.escape(setting)):
        transport.consumer("g", **{setting: value})
    with pytest.raises(ConfigurationError, match=re.escape(setting)):
        KafkaTransport(_NOWHERE, {setting: value}).consumer(None)


def test_producers_refuse_to_drop_idempotence() -> None:
    transport = KafkaTransport(_NOWHERE, {"enable.idempotence": "false"})
    with pytest.raises(ConfigurationError, match=r"enable\.idempotence"):
        transport.producer()
    with pytest.raises(ConfigurationError, match=r"enable\.idempotence"):
        transport.transactional_producer("tx")


def test_pinned_values_may_be_repeated() -> None:
    transport = KafkaTransport(_NOWHERE, {"isolation.level": "read_committed"})
    transport.consumer(None).close()


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.consumer("g"),
        lambda t: t.consumer(None),
        lambda t: t.producer(),
        lambda t: t.transactional_producer("tx"),
    ],
)
def test_client_config_reaches_every_client(make: Callable[[KafkaTransport], object]) -> None:
    # An invalid value is rejected by librdkafka itself: proof that it got there.
    transport = KafkaTransport(_NOWHERE, {"security.protocol": "carrier-pigeon"})
    with pytest.raises(ConfigurationError, match=r"security\.protocol"):
        make(transport)
