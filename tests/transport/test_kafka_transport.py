"""Kafka transport details that need no broker: settings, their prefixes, transport selection."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable

import pytest

from durafka.errors import ConfigurationError
from durafka.transport import open_transport
from durafka.transport.aiokafka import (
    AioKafkaTransport,
    AiokafkaUnsupportedError,
    aiokafka_options,
)
from durafka.transport.client_config import for_client
from durafka.transport.factory import open_async_transport
from durafka.transport.kafka import KafkaTransport
from durafka.transport.threaded import ThreadedAsyncTransport

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
    config = {"client.id": "c", "producer.linger.ms": "5", "consumer.fetch.min.bytes": "10"}
    assert aiokafka_options(config, "producer") == {"client_id": "c", "linger_ms": 5}
    assert aiokafka_options(config, "consumer") == {"client_id": "c", "fetch_min_bytes": 10}


def test_aiokafka_clients_skip_the_other_kinds_settings_as_librdkafka_does() -> None:
    # The asyncio client's consumers join no group: a worker's group settings, and a
    # producer's batching, in the same unprefixed config are not theirs.
    config = {"session.timeout.ms": "6000", "group.instance.id": "w1", "linger.ms": "5"}
    assert aiokafka_options(config, "producer") == {"linger_ms": 5}
    assert aiokafka_options(config, "consumer") == {}


def test_the_readme_tls_example_verifies_against_the_system_cas() -> None:
    # Before: no SSL context at all for a bare security.protocol (aiokafka refused it).
    options = aiokafka_options({"security.protocol": "ssl"}, "producer")
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert (
        context.cert_store_stats()["x509_ca"]
        == ssl.create_default_context().cert_store_stats()["x509_ca"]
    )


@pytest.mark.parametrize(
    ("config", "check_hostname", "verify_mode"),
    [
        ({"ssl.endpoint.identification.algorithm": "https"}, True, ssl.CERT_REQUIRED),
        ({"ssl.endpoint.identification.algorithm": "none"}, False, ssl.CERT_REQUIRED),
        ({"enable.ssl.certificate.verification": "false"}, False, ssl.CERT_NONE),
    ],
)
def test_aiokafka_verifies_certificates_as_librdkafka_does(
    config: dict[str, str], check_hostname: bool, verify_mode: ssl.VerifyMode
) -> None:
    context = aiokafka_options({"security.protocol": "ssl", **config}, "consumer")["ssl_context"]
    assert context.check_hostname is check_hostname
    assert context.verify_mode is verify_mode


def test_aiokafka_takes_sasl_scram_and_the_pinned_values() -> None:
    config = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "scram-sha-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "acks": "-1",
        "enable.idempotence": "true",
        "isolation.level": "read_committed",
        "compression.type": "gzip",
    }
    options = aiokafka_options(config, "producer")
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")
    assert options["compression_type"] == "gzip"
    assert "ssl_context" in options


@pytest.mark.parametrize(
    "config",
    [
        {"security.protocol": "sasl_ssl", "sasl.mechanism": "OAUTHBEARER"},
        {"security.protocol": "ssl", "ssl.keystore.location": "client.p12"},
        {"socket.keepalive.enable": "true"},
        {"enable.idempotence": "false"},
    ],
)
def test_a_setting_aiokafka_lacks_gives_the_asyncio_client_librdkafka(
    config: dict[str, str],
) -> None:
    # Before: a ConfigurationError; the asyncio client could not use the same config.
    with pytest.raises(AiokafkaUnsupportedError):
        aiokafka_options(config, "producer")
    transport = open_async_transport(_NOWHERE, config)
    assert isinstance(transport, ThreadedAsyncTransport)
    assert isinstance(transport.transport, KafkaTransport)


def test_settings_aiokafka_has_give_the_asyncio_client_aiokafka() -> None:
    transport = open_async_transport(_NOWHERE, {"security.protocol": "ssl", "linger.ms": "1"})
    assert isinstance(transport, AioKafkaTransport)
