"""Kafka transport details that need no broker: settings, their prefixes, transport selection."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from durafka.errors import ConfigurationError
from durafka.transport import open_transport
from durafka.transport.aiokafka import aiokafka_options
from durafka.transport.client_config import for_client
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


# -- client_config prefixes -------------------------------------------------------------


def test_a_prefix_limits_a_setting_to_one_kind_of_client() -> None:
    config = {
        "client.id": "shared",
        "consumer.client.id": "mine",
        "consumer.session.timeout.ms": "6000",
        "producer.linger.ms": "5",
        "admin.socket.timeout.ms": "1000",
    }
    assert for_client(config, "consumer") == {"client.id": "mine", "session.timeout.ms": "6000"}
    assert for_client(config, "producer") == {"client.id": "shared", "linger.ms": "5"}
    assert for_client(config, "admin") == {"client.id": "shared", "socket.timeout.ms": "1000"}


def test_a_consumer_setting_reaches_consumers_only() -> None:
    # librdkafka rejects the value: proof of which clients got it.
    transport = KafkaTransport(_NOWHERE, {"consumer.session.timeout.ms": "soon"})
    with pytest.raises(ConfigurationError, match=r"session\.timeout\.ms"):
        transport.consumer("g")
    transport.producer().close()
    transport.transactional_producer("tx").close()


def test_a_producer_setting_reaches_producers_only() -> None:
    transport = KafkaTransport(_NOWHERE, {"producer.batch.size": "large"})
    with pytest.raises(ConfigurationError, match=r"batch\.size"):
        transport.producer()
    with pytest.raises(ConfigurationError, match=r"batch\.size"):
        transport.transactional_producer("tx")
    transport.consumer(None).close()


def test_aiokafka_options_follow_the_prefixes() -> None:
    config = {"client.id": "c", "consumer.session.timeout.ms": "6000"}
    assert aiokafka_options(config, "producer") == {"client_id": "c"}
    assert aiokafka_options(config, "consumer") == {"client_id": "c", "session_timeout_ms": 6000}
    # Unprefixed, a group setting would reach the aiokafka producer, which has no such thing.
    with pytest.raises(ConfigurationError, match=r"'session\.timeout\.ms'.*for a producer"):
        aiokafka_options({"session.timeout.ms": "6000"}, "producer")
