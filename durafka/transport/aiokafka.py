"""Kafka through aiokafka: the asyncio client's producer and feeders, and their options.

The asyncio client on Kafka must never block its event loop. It speaks aiokafka
(an idempotent ``AIOKafkaProducer``, :class:`AioKafkaFeeder` tasks): twice the
start rate of confluent-kafka behind threads (docs/performance.md). Settings
are given in librdkafka names, like every other client's
(``Settings.client_config``); :func:`aiokafka_options` translates those with an
exact aiokafka equivalent (TLS, SASL PLAIN/SCRAM/GSSAPI, timeouts, batching)
and raises :class:`AiokafkaUnsupportedError` for any other, upon which
:func:`~durafka.transport.factory.open_async_transport` uses librdkafka on
threads instead, so one ``DURAFKA_CLIENT_CONFIG`` serves every client.

aiokafka is imported when first used, so that nothing else loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from durafka.errors import TransportError
from durafka.transport.base import FeedTarget, OutgoingRecord, Transport
from durafka.transport.client_config import ClientKind, for_client
from durafka.transport.delivery import DELIVERY_TIMEOUT
from durafka.transport.feeder import MAX_RECORDS, feeder_error

__all__ = ["AioKafkaFeeder", "AioKafkaTransport", "AiokafkaUnsupportedError", "aiokafka_options"]

log = logging.getLogger(__name__)


class AioKafkaTransport:
    """An :class:`~durafka.transport.base.AsyncTransport` on aiokafka.

    Args:
        bootstrap: the cluster's bootstrap servers.
        client_config: ``Settings.client_config`` (librdkafka names, see
            :func:`aiokafka_options`).

    Raises:
        AiokafkaUnsupportedError: a setting of ``client_config`` has no exact
            aiokafka equivalent.
    """

    def __init__(self, bootstrap: str, client_config: Mapping[str, str]) -> None:
        self.bootstrap = bootstrap
        self._client_config = dict(client_config)
        self._producer_options = aiokafka_options(client_config, "producer")
        self._consumer_options = aiokafka_options(client_config, "consumer")
        self._producer: Any = None

    async def start(self) -> None:
        """Start an idempotent producer (``acks=all``, no lingering unless configured).

        Raises:
            ClusterConnectionError: the cluster cannot be reached; the cause
                (refused, authentication, TLS...) is diagnosed with librdkafka,
                whose errors say more than aiokafka's.
        """
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        options = {
            "linger_ms": 0,  # 1 ms of lingering was 1 ms of every start's latency
            "request_timeout_ms": int(DELIVERY_TIMEOUT * 1000),
            **self._producer_options,
        }
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all", **options
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:  # ssl.SSLError is an OSError
            with contextlib.suppress(Exception):
                await producer.stop()
            raise await asyncio.to_thread(self._connection_error, exc) from None
        self._producer = producer

    def _connection_error(self, exc: BaseException) -> Exception:
        from durafka.errors import ClusterConnectionError
        from durafka.transport.kafka import KafkaTransport

        transport = KafkaTransport(self.bootstrap, self._client_config)
        try:
            transport.connect()
        except ClusterConnectionError as diagnosed:
            return diagnosed
        finally:
            transport.close()
        return TransportError(f"aiokafka could not connect to {self.bootstrap}: {exc!r}")

    async def partition_count(self, topic: str) -> int:
        """The number of partitions of ``topic``, from the producer's metadata."""
        from aiokafka.errors import UnknownTopicOrPartitionError

        assert self._producer is not None, "start() first"
        try:
            return len(await self._producer.partitions_for(topic))
        except UnknownTopicOrPartitionError:
            raise TransportError(
                f"topic {topic!r} is not available on {self.bootstrap}; create the task "
                "hub's topics first (Transport.ensure_topics)"
            ) from None

    async def send_all(self, records: Sequence[OutgoingRecord]) -> None:
        """Produce ``records``; return once each is acknowledged."""
        from aiokafka.errors import KafkaError, KafkaTimeoutError

        pending: list[asyncio.Future[Any]] = []
        out = records[0] if records else None
        try:
            # send() only enqueues (records queued while a request is in flight share the
            # next one, so linger_ms=0 costs no throughput); the futures resolve on the ack,
            # or fail once aiokafka expires the batch (request_timeout_ms, DELIVERY_TIMEOUT):
            # no timer of our own per call.
            for out in records:
                pending.append(
                    await self._producer.send(
                        out.topic, value=out.value, key=out.key, partition=out.partition
                    )
                )
            for future in pending:
                await future
        except KafkaTimeoutError:
            assert out is not None
            raise TransportError(
                f"the broker did not acknowledge the records to {out.topic} within "
                f"{DELIVERY_TIMEOUT}s; they may or may not have been written"
            ) from None
        except KafkaError as exc:
            assert out is not None
            raise TransportError(f"writing to {out.topic}[{out.partition}] failed: {exc}") from exc
        finally:
            for future in pending:
                if not future.done():  # we stop waiting: retrieve its outcome, unlogged
                    future.add_done_callback(_ignore_outcome)

    async def feed(self, target: FeedTarget, topic: str) -> AioKafkaFeeder:
        """Start an :class:`AioKafkaFeeder` task for ``topic``."""
        feeder = AioKafkaFeeder(
            target,
            topic,
            await self.partition_count(topic),
            self.bootstrap,
            self._consumer_options,
        )
        await feeder.start()
        return feeder

    @contextlib.contextmanager
    def sync_transport(self) -> Iterator[Transport]:
        """A Kafka transport opened for the scan, closed after it.

        aiokafka has no manual-assign read_committed scan to the high watermark
        like the transports' consumers.
        """
        from durafka.transport.kafka import KafkaTransport

        transport = KafkaTransport(self.bootstrap, self._client_config)
        try:
            yield transport
        finally:
            transport.close()

    async def close(self) -> None:
        """Stop the producer (start() may be called again)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class AioKafkaFeeder:
    """Feeds a view from a compacted Kafka topic with an aiokafka consumer task.

    Used by the asyncio client on Kafka so no thread and no blocking call sits
    on its event loop. Reads ``read_committed``, with no group, every
    partition from the beginning.

    Args:
        view: the view to feed.
        topic: the compacted topic (``H.status``, ``H.entities``).
        partitions: its partition count.
        bootstrap_servers: the Kafka cluster.
        options: extra ``AIOKafkaConsumer`` arguments (security).
    """

    def __init__(
        self,
        view: FeedTarget,
        topic: str,
        partitions: int,
        bootstrap_servers: str,
        options: dict[str, Any] | None = None,
    ) -> None:
        self._view = view
        self._topic = topic
        self._partitions = partitions
        self._bootstrap = bootstrap_servers
        self._options = options or {}
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, assign the partitions and start the background task."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition as KafkaTopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # The broker answers a fetch as soon as a record is committed, or after
            # this long; low so a waiting client sees a new status within ms.
            fetch_max_wait_ms=10,
            **self._options,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            partitions = [KafkaTopicPartition(self._topic, p) for p in range(self._partitions)]
            consumer.assign(partitions)
            highs: dict[Any, int] = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            self._consumer = None
            raise
        self._task = asyncio.get_running_loop().create_task(
            self._run(consumer, highs), name=f"durafka-status-{self._topic}"
        )

    async def stop(self) -> None:
        """Cancel the task and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self, consumer: Any, highs: dict[Any, int]) -> None:
        behind = {tp: high for tp, high in highs.items() if high > 0}
        if not behind:
            self._view.mark_ready()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
                for records in batches.values():
                    self._view.apply((r.key, r.value) for r in records)
                if behind:
                    for tp in list(behind):
                        if await consumer.position(tp) >= behind[tp]:
                            del behind[tp]
                    if not behind:
                        self._view.mark_ready()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("the status feeder of %s stopped: %s", self._topic, exc, exc_info=exc)
            self._view.fail(feeder_error(self._topic, exc))


class AiokafkaUnsupportedError(Exception):
    """A ``client_config`` setting has no exact aiokafka equivalent (internal).

    :func:`durafka.transport.factory.open_async_transport` then gives the
    asyncio client librdkafka on threads instead, which takes every setting.
    """


#: librdkafka names with an exact aiokafka keyword argument, for every client.
_COMMON = {
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "request.timeout.ms": "request_timeout_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
    "retry.backoff.ms": "retry_backoff_ms",
}
_PRODUCER = {
    "linger.ms": "linger_ms",
    "batch.size": "max_batch_size",
    "message.max.bytes": "max_request_size",
    "compression.type": "compression_type",
    "compression.codec": "compression_type",
    "transaction.timeout.ms": "transaction_timeout_ms",
}
_CONSUMER = {
    "fetch.wait.max.ms": "fetch_max_wait_ms",
    "fetch.min.bytes": "fetch_min_bytes",
    "fetch.max.bytes": "fetch_max_bytes",
    "max.partition.fetch.bytes": "max_partition_fetch_bytes",
}
#: Settings of consumer groups and offset commits: the asyncio client's consumers join
#: no group and commit nothing, so a processor's or worker's group settings in the same
#: config do not concern them.
_GROUP_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.commit.interval.ms",
        "auto.offset.reset",
    }
)
#: Settings durafka pins (KafkaTransport refuses other values): aiokafka is set the same way.
_PINNED = {
    "enable.idempotence": "true",
    "acks": "all",
    "isolation.level": "read_committed",
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
}
_PINNED_SYNONYMS = {"acks": {"all", "-1"}}
_SSL = frozenset(
    {
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
        "ssl.cipher.suites",
    }
)
_INTS = frozenset(
    {
        "request_timeout_ms",
        "metadata_max_age_ms",
        "connections_max_idle_ms",
        "retry_backoff_ms",
        "linger_ms",
        "max_batch_size",
        "max_request_size",
        "transaction_timeout_ms",
        "fetch_max_wait_ms",
        "fetch_min_bytes",
        "fetch_max_bytes",
        "max_partition_fetch_bytes",
    }
)
_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"})
_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})


def aiokafka_options(client_config: Mapping[str, str], kind: ClientKind) -> dict[str, Any]:
    """Translate ``Settings.client_config`` (librdkafka names) into aiokafka arguments.

    Only exact equivalents are translated: security (TLS files and checks, SASL
    PLAIN, SCRAM and GSSAPI), timeouts, batching and fetch sizes. Consumer group
    settings are skipped (these consumers join no group); settings durafka pins
    must keep the pinned value.

    Args:
        client_config: the settings, with ``producer.``/``consumer.`` prefixes
            (see :func:`durafka.transport.client_config.for_client`).
        kind: the aiokafka client being made.

    Raises:
        AiokafkaUnsupportedError: a setting has no exact aiokafka equivalent
            (e.g. OAUTHBEARER, a PKCS#12 key store, ``socket.keepalive.enable``);
            silently dropping it could connect without the security it asks for.
    """
    names = {**_COMMON, **(_PRODUCER if kind == "producer" else _CONSUMER)}
    # As librdkafka does (with a CONFWARN), a client ignores the other kind's settings.
    others = frozenset(_CONSUMER) | _GROUP_ONLY if kind == "producer" else frozenset(_PRODUCER)
    options: dict[str, Any] = {}
    ssl_settings: dict[str, str] = {}
    for key, value in for_client(client_config, kind).items():
        if key in _SSL:
            ssl_settings[key] = value
        elif key in _PINNED:
            if value.lower() not in _PINNED_SYNONYMS.get(key, {_PINNED[key]}):
                raise AiokafkaUnsupportedError(f"{key}={value}")
        elif key in _GROUP_ONLY or key in others:
            continue
        elif key in names:
            arg = names[key]
            options[arg] = _value(key, arg, value)
        else:
            raise AiokafkaUnsupportedError(key)
    protocol = str(options.get("security_protocol", "PLAINTEXT"))
    if ssl_settings or protocol.endswith("SSL"):
        options["ssl_context"] = _ssl_context(ssl_settings)
    if protocol.startswith("SASL") and options.get("sasl_mechanism", "GSSAPI") == "GSSAPI":
        _check_gssapi(client_config)
    return options


def _value(key: str, arg: str, value: str) -> Any:
    if arg in _INTS:
        try:
            return int(value)
        except ValueError:
            raise AiokafkaUnsupportedError(f"{key}={value}") from None
    if arg == "security_protocol":
        if value.upper() not in _PROTOCOLS:
            raise AiokafkaUnsupportedError(f"{key}={value}")
        return value.upper()
    if arg == "sasl_mechanism":
        if value.upper() not in _MECHANISMS:  # OAUTHBEARER needs a token provider object
            raise AiokafkaUnsupportedError(f"{key}={value}")
        return value.upper()
    if arg == "compression_type":
        return _compression(key, value)
    return value


def _compression(key: str, value: str) -> str | None:
    from aiokafka import codec

    codec_name = value.lower()
    available = {
        "none": True,
        "gzip": codec.has_gzip(),
        "snappy": codec.has_snappy(),
        "lz4": codec.has_lz4(),
        "zstd": codec.has_zstd(),
    }
    if not available.get(codec_name, False):
        raise AiokafkaUnsupportedError(f"{key}={value} (no such codec for aiokafka here)")
    return None if codec_name == "none" else codec_name


def _ssl_context(settings: Mapping[str, str]) -> ssl.SSLContext:
    """An SSL context verifying as librdkafka does with these settings.

    librdkafka's defaults: the system's CAs unless ``ssl.ca.location`` names a
    file or a directory, the certificate verified, and (since librdkafka 2.0)
    the broker's host name checked unless ``ssl.endpoint.identification.algorithm``
    is ``none``.
    """
    location = settings.get("ssl.ca.location")
    if location == "probe":  # librdkafka: look in the system's usual places
        location = None
    is_dir = location is not None and os.path.isdir(location)
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=None if is_dir else location,
        capath=location if is_dir else None,
        cadata=settings.get("ssl.ca.pem"),
    )
    certificate = settings.get("ssl.certificate.location")
    key = settings.get("ssl.key.location")
    if certificate is not None or key is not None:
        if certificate is None:
            raise AiokafkaUnsupportedError("ssl.key.location without ssl.certificate.location")
        # A password of "" fails on an encrypted key instead of prompting on the terminal.
        context.load_cert_chain(certificate, key, settings.get("ssl.key.password", ""))
    ciphers = settings.get("ssl.cipher.suites")
    if ciphers is not None:
        context.set_ciphers(ciphers)
    algorithm = settings.get("ssl.endpoint.identification.algorithm", "https").lower()
    if algorithm not in ("https", "none"):
        raise AiokafkaUnsupportedError(f"ssl.endpoint.identification.algorithm={algorithm}")
    if algorithm == "none":
        context.check_hostname = False
    if settings.get("enable.ssl.certificate.verification", "true").lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _check_gssapi(client_config: Mapping[str, str]) -> None:
    # aiokafka speaks GSSAPI through the python-gssapi package and the ambient Kerberos
    # credentials; librdkafka runs kinit with its keytab and principal settings.
    if importlib.util.find_spec("gssapi") is None:
        raise AiokafkaUnsupportedError("sasl.mechanism=GSSAPI (the gssapi package is missing)")
    kinit = [k for k in client_config if k.split(".", 1)[-1].startswith("sasl.kerberos.")]
    extra = [k for k in kinit if not k.endswith("sasl.kerberos.service.name")]
    if extra:
        raise AiokafkaUnsupportedError(", ".join(sorted(extra)))
