"""Kafka through aiokafka: the asyncio client's producer and feeders, and their options.

The asyncio client on Kafka must never block its event loop, so it speaks
aiokafka (an idempotent ``AIOKafkaProducer``, :class:`AioKafkaFeeder` tasks)
rather than confluent-kafka. Settings are given in librdkafka names, like every
other client's (``Settings.client_config``); :func:`aiokafka_options` translates
them and refuses those it cannot.

aiokafka is imported when first used, so that nothing else loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from durafka.errors import ConfigurationError, TransportError
from durafka.transport.base import FeedTarget, OutgoingRecord, Transport
from durafka.transport.client_config import ClientKind, for_client
from durafka.transport.delivery import DELIVERY_TIMEOUT
from durafka.transport.feeder import MAX_RECORDS, feeder_error

__all__ = ["AioKafkaFeeder", "AioKafkaTransport", "aiokafka_options"]

log = logging.getLogger(__name__)


class AioKafkaTransport:
    """An :class:`~durafka.transport.base.AsyncTransport` on aiokafka.

    Args:
        bootstrap: the cluster's bootstrap servers.
        client_config: ``Settings.client_config`` (librdkafka names, see
            :func:`aiokafka_options`).

    Raises:
        ConfigurationError: a setting of ``client_config`` has no aiokafka equivalent.
    """

    def __init__(self, bootstrap: str, client_config: Mapping[str, str]) -> None:
        self.bootstrap = bootstrap
        self._client_config = dict(client_config)
        self._producer_options = aiokafka_options(client_config, "producer")
        self._consumer_options = aiokafka_options(client_config, "consumer")
        self._producer: Any = None

    async def start(self) -> None:
        """Start an idempotent producer (``acks=all``, no lingering)."""
        from aiokafka import AIOKafkaProducer

        options = {"request_timeout_ms": int(DELIVERY_TIMEOUT * 1000), **self._producer_options}
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,  # 1 ms of lingering was 1 ms of every start's latency
            **options,
        )
        await producer.start()
        self._producer = producer

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


# librdkafka names (Settings.client_config) -> aiokafka keyword arguments.
_AIOKAFKA_NAMES = {
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "request.timeout.ms": "request_timeout_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
    "retry.backoff.ms": "retry_backoff_ms",
}
#: Consumer-only names; the asyncio client's consumers take no group, so these are
#: accepted (a worker's or processor's group settings may sit in the same config).
_AIOKAFKA_CONSUMER_NAMES = {
    "session.timeout.ms": "session_timeout_ms",
    "heartbeat.interval.ms": "heartbeat_interval_ms",
    "max.poll.interval.ms": "max_poll_interval_ms",
}
_AIOKAFKA_INTS = frozenset(
    k for k in [*_AIOKAFKA_NAMES.values(), *_AIOKAFKA_CONSUMER_NAMES.values()] if k.endswith("_ms")
)
_SSL_FILES = {
    "ssl.ca.location": "cafile",
    "ssl.certificate.location": "certfile",
    "ssl.key.location": "keyfile",
    "ssl.key.password": "password",
}


def aiokafka_options(client_config: Mapping[str, str], kind: ClientKind) -> dict[str, Any]:
    """Translate ``Settings.client_config`` (librdkafka names) into aiokafka arguments.

    Args:
        client_config: the settings, with ``producer.``/``consumer.`` prefixes
            (see :func:`durafka.transport.client_config.for_client`).
        kind: the aiokafka client being made.

    Raises:
        ConfigurationError: a setting has no aiokafka equivalent; the asyncio
            client on Kafka would otherwise silently connect without it.
    """
    names = dict(_AIOKAFKA_NAMES)
    if kind == "consumer":
        names.update(_AIOKAFKA_CONSUMER_NAMES)
    options: dict[str, Any] = {}
    ssl: dict[str, str] = {}
    for key, value in for_client(client_config, kind).items():
        if key in _SSL_FILES:
            ssl[_SSL_FILES[key]] = value
            continue
        arg = names.get(key)
        if arg is None:
            raise ConfigurationError(
                f"client_config setting {key!r} has no aiokafka equivalent for a {kind}, so "
                f"the asyncio client cannot apply it; supported: {sorted([*names, *_SSL_FILES])}"
            )
        options[arg] = int(value) if arg in _AIOKAFKA_INTS else value
    if "security_protocol" in options:
        options["security_protocol"] = str(options["security_protocol"]).upper()
    if ssl:
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(**ssl)
    return options
