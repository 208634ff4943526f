"""The Kafka transport: thin wrappers around confluent-kafka's clients.

Records are confluent-kafka's own ``Message`` objects (they already satisfy
:class:`~durafka.transport.base.Record`); the wrappers only convert partitions,
pin the settings durafka's guarantees depend on, and turn client errors into
durafka's typed errors.

Settings, lowest precedence first: durafka's defaults (low-latency fetching,
``linger.ms=0``), the transport's ``client_config`` (e.g. security settings,
passed to every client), the per-client ``config``. A few settings are pinned
because the exactly-once design depends on them (``isolation.level``,
``enable.auto.commit``, ``enable.auto.offset.store``, ``enable.idempotence``);
asking for another value is a :class:`~durafka.errors.ConfigurationError`.

Three librdkafka behaviours the wrappers work around (seen on Kafka 4.1 with
librdkafka 2.16):

* a partition assigned at a *logical* offset (beginning, committed) resolves it
  asynchronously, and a ``seek()`` made before that finishes can be overridden,
  delivering records twice. So partitions are always assigned at absolute
  offsets: ``assign(None)`` resolves the low watermark, and a group assignment
  looks up the committed offsets before ``incremental_assign``.
* ``seek()`` on a partition whose fetcher has not started yet fails with
  ``_STATE``; the wrapper then re-assigns that one partition at the offset.
* ``position()`` is OFFSET_INVALID until the first record after an assign or
  seek, and for a moment after ``assign()`` still reports where an earlier
  assignment stopped. The wrapper waits for the latter to clear and answers
  the former with the offset it assigned or sought.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from queue import SimpleQueue
from typing import Any, Final, TypeVar, cast

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from durafka.errors import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    ProducerGivenUpError,
    RecordRejectedError,
    TransactionError,
    TransportError,
)
from durafka.topology import TopicSpec
from durafka.transport.admin import apply_topics, describe_topics
from durafka.transport.base import (
    RECORD_ERROR_CODES,
    DeliveryCallback,
    PartitionsCallback,
    Record,
    TopicPartition,
)
from durafka.transport.calls import tracked
from durafka.transport.client_config import ClientKind, for_client
from durafka.transport.connection import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    await_cluster,
)
from durafka.transport.limits import Headers

__all__ = [
    "KafkaConsumer",
    "KafkaProducer",
    "KafkaTransactionalProducer",
    "KafkaTransport",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Small requests on loopback or a LAN: Nagle's algorithm would hold them for the
# peer's delayed ACK (tens of ms), which dominated end-to-end latency.
_COMMON_DEFAULTS: Final[Mapping[str, Any]] = {
    "socket.nagle.disable": True,
}
_CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = {
    **_COMMON_DEFAULTS,
    "auto.offset.reset": "earliest",
    "fetch.wait.max.ms": 10,
    "fetch.min.bytes": 1,
    "enable.partition.eof": False,
}
_CONSUMER_PINNED: Final[Mapping[str, Any]] = {
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}
_GROUP_DEFAULTS: Final[Mapping[str, Any]] = {
    "partition.assignment.strategy": "cooperative-sticky",
}
_PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    **_COMMON_DEFAULTS,
    # Every caller flushes (or awaits delivery) right away: batching comes from the
    # processor's batches, not from waiting.
    "linger.ms": 0,
    "acks": "all",
}
_PRODUCER_PINNED: Final[Mapping[str, Any]] = {
    "enable.idempotence": True,
}
_TRANSACTIONAL_DEFAULTS: Final[Mapping[str, Any]] = {
    "transaction.timeout.ms": 10_000,  # Settings.transaction_timeout_ms's default
}

# Errors that retrying will not fix: misconfigured credentials or ACLs.
_FATAL_CONSUMER_ERRORS: Final = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
_TRANSIENT_REQUEST_ERRORS: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)
_REQUEST_TIMEOUT_S: Final = 10.0
_SEND_OFFSETS_TIMEOUT_S: Final = 30.0
_QUEUE_FULL_TIMEOUT_S: Final = 30.0
_CLOSE_TIMEOUT_S: Final = 10.0
# A poll may also run rebalance callbacks, whose own requests are bounded (and tracked).
_POLL_CALLBACKS_S: Final = 60.0
# Closing a client: leaving the group, aborting a transaction, delivering what is queued.
_CLOSE_BOUND_S: Final = 60.0
# What a bounded call may take beyond its timeout (a last retry, a backoff).
_SLACK_S: Final = 5.0
# After a client reported trouble (the broker down, a connection lost), librdkafka's
# send_offsets_to_transaction was seen blocking for good: its group coordinator request
# waits for a broker state change that may not come (librdkafka issues 5456, 5511). For
# this long after such trouble the call runs on a helper thread, so that the role can
# give it up, with its producer, once it outlives its bound.
_TROUBLE_WINDOW_S: Final = 600.0
_POSITION_RESET_TIMEOUT_S: Final = 2.0


def _merge(
    layers: Iterable[Mapping[str, Any]], pinned: Mapping[str, Any], client: str
) -> dict[str, Any]:
    """Merge config layers (later wins), then pin the settings durafka depends on."""
    config: dict[str, Any] = {}
    for layer in layers:
        config.update(layer)
    for name, value in pinned.items():
        if name in config and str(config[name]).lower() != str(value).lower():
            raise ConfigurationError(
                f"{name}={config[name]!r} is not supported for the {client}: durafka's "
                f"exactly-once processing needs {name}={value!r}; remove the setting"
            )
        config[name] = value
    return config


def _create(client: Callable[[dict[str, Any]], _T], config: Mapping[str, Any]) -> _T:
    """Construct a confluent-kafka client; librdkafka's setting errors become ours."""
    try:
        return client(dict(config))
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc


def _kafka_tp(tp: TopicPartition, offset: int = confluent_kafka.OFFSET_INVALID) -> Any:
    return KafkaTopicPartition(tp.topic, tp.partition, offset)


def _ours(partitions: Iterable[KafkaTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


def _request(what: str, call: Callable[[float], _T], timeout: float = _REQUEST_TIMEOUT_S) -> _T:
    """Run a metadata or offset request ``call(timeout)``, retrying transient errors.

    A topic created a moment ago may have no leader yet in this client's metadata,
    and a group coordinator may still be loading.
    """
    deadline = time.monotonic() + timeout
    with tracked(what, timeout + _SLACK_S):
        while True:
            try:
                return call(max(deadline - time.monotonic(), 0.1))
            except KafkaException as exc:
                error, text = _describe(exc)
                transient = error is not None and (
                    error.retriable() or error.code() in _TRANSIENT_REQUEST_ERRORS
                )
                if not transient or time.monotonic() + 0.05 >= deadline:
                    raise TransportError(f"{what} unavailable: {text}") from exc
                time.sleep(0.05)


def _describe(exc: KafkaException) -> tuple[KafkaError | None, str]:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error, f"{error.str()} [{error.name()}]"
    return None, str(exc)


class KafkaConsumer:
    """A read_committed confluent-kafka consumer (see :class:`durafka.transport.base.Consumer`)."""

    def __init__(self, config: Mapping[str, Any], group_id: str | None) -> None:
        """Create the client; ``config`` is complete (see :meth:`KafkaTransport.consumer`)."""
        self._group_id = group_id
        strategy = str(config.get("partition.assignment.strategy", ""))
        self._cooperative = "cooperative" in strategy
        self._consumer = _create(confluent_kafka.Consumer, config)
        # Where reading starts after an assign or seek, for position() until librdkafka
        # reports one itself (it says OFFSET_INVALID until the first fetch).
        self._starts: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._last_error: str | None = None
        self._closed = False

    # -- assignment --------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        """Join the group; callbacks get the increments and run inside :meth:`poll_batch`."""
        if self._group_id is None:
            raise ConfigurationError("subscribe() needs a consumer created with a group_id")

        def assigned(consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
            located = self._locate(partitions)
            # Assigning here (not leaving it to confluent-kafka after the callback) lets
            # the callback pause or seek the new partitions right away.
            change = consumer.incremental_assign if self._cooperative else consumer.assign
            self._reassigning(located, lambda: change(located))
            for p in located:
                if p.offset >= 0:
                    self._starts[TopicPartition(p.topic, p.partition)] = p.offset
            if partitions and on_assign is not None:
                on_assign(_ours(partitions))

        def revoked(consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
            try:
                # Still assigned while the callback runs: it may finish its transaction.
                if partitions and on_revoke is not None:
                    on_revoke(_ours(partitions))
            finally:
                if self._cooperative:
                    consumer.incremental_unassign(partitions)
                else:
                    consumer.unassign()
                for tp in _ours(partitions):
                    self._starts.pop(tp, None)
                    self._paused.discard(tp)

        try:
            self._consumer.subscribe(
                list(topics), on_assign=assigned, on_revoke=revoked, on_lost=revoked
            )
        except KafkaException as exc:
            raise TransportError(f"subscribe({list(topics)}) failed: {_describe(exc)[1]}") from exc

    def _locate(self, partitions: list[KafkaTopicPartition]) -> list[KafkaTopicPartition]:
        """The partitions at absolute offsets: committed, else the low watermark."""
        if not partitions:
            return partitions
        try:
            located: list[KafkaTopicPartition] = []
            for tp, offset in self.committed(_ours(partitions)).items():
                start = self.watermarks(tp)[0] if offset is None else offset
                located.append(_kafka_tp(tp, start))
            return located
        except TransportError as exc:
            # librdkafka resolves the committed offset itself; only an early seek may race.
            log.warning("could not look up where %s start (%s); librdkafka will", partitions, exc)
            return partitions

    def assign(self, offsets: Mapping[TopicPartition, int | None]) -> None:
        """Read these partitions by hand, from the given offsets (None: the beginning)."""
        parts: list[KafkaTopicPartition] = []
        starts: dict[TopicPartition, int] = {}
        for tp, offset in offsets.items():
            start = self.watermarks(tp)[0] if offset is None else offset
            parts.append(_kafka_tp(tp, start))
            starts[tp] = start
        try:
            self._reassigning(parts, lambda: self._consumer.assign(parts))
        except KafkaException as exc:
            raise TransportError(f"assign({parts}) failed: {_describe(exc)[1]}") from exc
        self._starts = starts
        self._paused = set()

    def unassign(self) -> None:
        """Stop reading every manually assigned partition."""
        self._consumer.unassign()
        self._starts = {}
        self._paused = set()

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer currently reads."""
        return sorted(_ours(self._consumer.assignment()))

    # -- reading -----------------------------------------------------------------------

    def poll_batch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records, waiting up to ``timeout`` s for the first."""
        if self._closed:
            raise TransportError("the consumer is closed")
        consumer = self._consumer
        try:
            with tracked("consumer poll", timeout + _POLL_CALLBACKS_S):
                # librdkafka's consume(n, timeout) waits out the whole timeout unless n
                # records arrive; wait for the first record only, then take what is
                # buffered.
                first = consumer.poll(timeout)
                if first is None:
                    return []
                messages = [first]
                if max_records > 1:
                    messages.extend(consumer.consume(max_records - 1, 0))
        except KafkaException as exc:
            raise TransportError(f"Kafka consumer failed: {_describe(exc)[1]}") from exc
        for message in messages:
            if message.error() is not None:
                return self._without_errors(messages)
        return cast("list[Record]", messages)

    def _without_errors(self, messages: list[Message]) -> list[Record]:
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.fatal() or error.code() in _FATAL_CONSUMER_ERRORS:
                raise TransportError(
                    f"Kafka consumer failed: {error.str()} [{error.name()}]; check the "
                    "client_config (credentials, ACLs) and the broker"
                )
            text = error.str()
            # Errors such as an unknown subscribed topic repeat on every poll: log once.
            log.log(
                logging.DEBUG if text == self._last_error else logging.WARNING,
                "Kafka consumer error (will retry): %s",
                text,
            )
            self._last_error = text
        return records

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching these partitions until :meth:`resume` (unassigned ones are ignored)."""
        tps = list(partitions)
        self._consumer.pause([_kafka_tp(tp) for tp in tps])
        self._paused.update(tps)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch these paused partitions again (unassigned ones are ignored)."""
        tps = list(partitions)
        kafka_tps = [_kafka_tp(tp) for tp in tps]
        self._consumer.resume(kafka_tps)
        self._paused.difference_update(tps)
        # librdkafka applies a resume when the partition's broker thread next wakes up:
        # up to ~1 s later if it had nothing else to fetch (a worker that paused while
        # full then idled a second per refill). A seek to the position, a no-op for
        # what is read next, wakes it now.
        try:
            positions = self._consumer.position(kafka_tps)
        except KafkaException:
            return
        for tp in positions:
            if tp.offset >= 0:
                with contextlib.suppress(KafkaException):
                    self._consumer.seek(tp)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Continue reading ``partition`` at ``offset`` (the next poll sees it)."""
        if partition not in set(self.assignment()):
            raise TransportError(f"partition {partition} is not assigned to this consumer")
        target = _kafka_tp(partition, offset)
        self._reassigning([target], lambda: self._seek(target))
        self._starts[partition] = offset

    def _seek(self, target: KafkaTopicPartition) -> None:
        try:
            self._consumer.seek(target)
        except KafkaException as exc:
            error, text = _describe(exc)
            if error is None or error.code() != KafkaError._STATE:
                raise TransportError(
                    f"seek({target.topic}[{target.partition}], {target.offset}) failed: {text}"
                ) from exc
            # The partition's fetcher has not started yet; re-assigning it at the
            # offset has the same effect (a paused partition stays paused).
            bare = KafkaTopicPartition(target.topic, target.partition)
            self._consumer.incremental_unassign([bare])
            self._consumer.incremental_assign([target])
            if TopicPartition(target.topic, target.partition) in self._paused:
                self._consumer.pause([bare])

    def _reassigning(self, parts: list[KafkaTopicPartition], change: Callable[[], None]) -> None:
        """Run ``change`` (an assign or seek of ``parts``), then let librdkafka catch up.

        librdkafka applies assignments on its own thread: for a moment ``position()``
        still reports where an earlier assignment of the partition stopped, and a
        restore loop comparing it with the high watermark would stop too early.
        Until the next ``consume()`` no record can move a position, so anything
        other than the old value means the change has been applied.
        """
        if not parts:
            change()
            return
        bare = [KafkaTopicPartition(p.topic, p.partition) for p in parts]
        before = self._consumer.position(bare)
        change()
        stale = {
            (b.topic, b.partition): b.offset
            for b, p in zip(before, parts, strict=True)
            if b.offset >= 0 and b.offset != p.offset
        }
        deadline = time.monotonic() + _POSITION_RESET_TIMEOUT_S
        while stale:
            now = self._consumer.position([KafkaTopicPartition(t, p) for t, p in stale])
            stale = {
                (n.topic, n.partition): n.offset
                for n in now
                if stale.get((n.topic, n.partition)) == n.offset
            }
            if not stale:
                return
            if time.monotonic() > deadline:
                log.warning("librdkafka still reports old positions for %s", sorted(stale))
                return
            time.sleep(0.0005)

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer will read from ``partition``."""
        offset: int = self._consumer.position([_kafka_tp(partition)])[0].offset
        if offset >= 0:
            return offset
        start = self._starts.get(partition)
        if start is not None:
            return start
        if partition not in set(self.assignment()):
            raise TransportError(f"partition {partition} is not assigned to this consumer")
        # Assigned at a logical offset and nothing fetched yet: where fetching starts.
        if self._group_id is not None:
            committed = self.committed([partition])[partition]
            if committed is not None:
                return committed
        return self.watermarks(partition)[0]

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing was committed)."""
        if self._group_id is None:
            raise ConfigurationError("committed() needs a consumer created with a group_id")
        wanted = [_kafka_tp(tp) for tp in partitions]
        found = _request(
            "committed offsets", lambda timeout: self._consumer.committed(wanted, timeout)
        )
        return {
            TopicPartition(p.topic, p.partition): (p.offset if p.offset >= 0 else None)
            for p in found
        }

    def committed_metadata(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, str]:
        """The metadata committed with the group's offsets ("" where none was)."""
        if self._group_id is None:
            raise ConfigurationError("committed_metadata() needs a consumer with a group_id")
        wanted = [_kafka_tp(tp) for tp in partitions]
        found = _request(
            "committed offsets", lambda timeout: self._consumer.committed(wanted, timeout)
        )
        return {TopicPartition(p.topic, p.partition): p.metadata or "" for p in found}

    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        """``(low, high)``; with read_committed, high is the last stable offset."""
        wanted = _kafka_tp(partition)
        return _request(
            f"watermarks of {partition}",
            lambda timeout: self._consumer.get_watermark_offsets(wanted, timeout, cached=False),
        )

    def group_metadata(self) -> Any:
        """confluent-kafka's ``ConsumerGroupMetadata`` for ``send_offsets``."""
        if self._group_id is None:
            raise ConfigurationError("group_metadata() needs a consumer created with a group_id")
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (``on_revoke`` runs for the owned partitions); idempotent."""
        if not self._closed:
            self._closed = True
            with tracked("consumer close", _CLOSE_BOUND_S):
                self._consumer.close()


class KafkaProducer:
    """An idempotent confluent-kafka producer (see :class:`durafka.transport.base.Producer`)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        """Create the client; ``config`` is complete (see :meth:`KafkaTransport.producer`)."""
        self._producer = _create(confluent_kafka.Producer, config)
        self._closed = False

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue a record for ``partition``; ``on_delivery`` reports its offset."""
        deadline: float | None = None
        while True:
            try:
                # Only a full queue waits (bounded below); no tracking on the hot path.
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition,
                    on_delivery=cast(Any, on_delivery),
                    headers=cast(Any, headers),
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + _QUEUE_FULL_TIMEOUT_S
                if now >= deadline:
                    raise TransportError(
                        f"the producer queue stayed full for {_QUEUE_FULL_TIMEOUT_S:.0f} s; "
                        "is the broker reachable?"
                    ) from None
                with tracked("producer poll (queue full)", 0.1 + _SLACK_S):
                    self._producer.poll(0.1)
            except KafkaException as exc:
                raise self._produce_error(topic, partition, exc) from exc

    def _produce_error(self, topic: str, partition: int, exc: KafkaException) -> Exception:
        return TransportError(f"produce to {topic}[{partition}] failed: {_describe(exc)[1]}")

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery callbacks, waiting up to ``timeout`` s for one."""
        self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every record to be delivered; returns how many are still pending."""
        with tracked("producer flush", timeout + _SLACK_S):
            return self._producer.flush(timeout)

    def close(self) -> None:
        """Deliver what is queued (bounded wait) and release the client; idempotent."""
        if self._closed:
            return
        self._closed = True
        with tracked("producer close", _CLOSE_BOUND_S):
            left = self._producer.flush(_CLOSE_TIMEOUT_S)
            if left:
                log.warning("producer closed with %d undelivered records", left)
            self._producer.close()


# A call for the helper thread: the call, its timeout, the lock it releases when it
# returns, and where it puts what it raised.
_HelperCall = tuple[Callable[[float], None], float, threading.Lock, list[BaseException]]


def _serve_calls(calls: SimpleQueue[_HelperCall | None]) -> None:
    """The helper thread of a producer's guarded calls, until it gets None."""
    while (item := calls.get()) is not None:
        call, timeout, finished, failure = item
        try:
            call(timeout)
        except BaseException as exc:
            failure.append(exc)
        finally:
            finished.release()


class KafkaTransactionalProducer(KafkaProducer):
    """A transactional confluent-kafka producer; errors become :class:`TransactionError`.

    Retriable errors of the transactional calls are retried within the call's
    timeout (the transaction is nearly done, retrying is cheaper than redoing
    the batch); everything else raises at once, with ``fatal`` telling whether
    aborting is enough or the producer must be recreated.

    For a while after the transport's clients reported trouble (a broker down),
    ``send_offsets`` runs librdkafka's call on a helper thread and gives it up,
    with the producer, once it outlives its bound: librdkafka was seen never
    returning from it then. The producer is left to that call; it and every
    later call fail with :class:`~durafka.errors.ProducerGivenUpError` (not
    fatal), and the caller replaces the producer (``abandon``), whose
    successor's ``init_transactions`` aborts the transaction.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        """Create the client; ``config`` includes ``transactional.id``."""
        super().__init__(config)
        self._transactional_id = str(config["transactional.id"])
        self._in_transaction = False
        # Set once librdkafka reported a fatal error: every later call fails fast.
        self._fatal: TransactionError | None = None
        errors = config.get("error_cb")
        self._errors = errors if isinstance(errors, ClientErrors) else None
        # Set once a call was given up while still blocked in librdkafka: the client
        # belongs to that call from then on, and every later call fails fast.
        self._stuck: str | None = None
        # The calls for the helper thread of _on_helper (None ends it).
        self._helper: SimpleQueue[_HelperCall | None] | None = None

    def init_transactions(self, timeout: float = 30.0) -> None:
        """Register the ``transactional.id``, fencing older producers that used it."""
        self._retrying("init_transactions", self._producer.init_transactions, timeout)

    def begin_transaction(self) -> None:
        """Start a transaction."""
        self._raise_if_fatal("begin_transaction")
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise self._transaction_error("begin_transaction", exc) from exc
        self._in_transaction = True

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue a record in the open transaction; ``on_delivery`` reports its offset."""
        self._raise_if_fatal("produce")
        super().produce(topic, partition, key, value, on_delivery, headers)

    def _produce_error(self, topic: str, partition: int, exc: KafkaException) -> Exception:
        error, text = _describe(exc)
        if error is not None and error.code() in RECORD_ERROR_CODES:
            # This record can never be produced (e.g. MSG_SIZE_TOO_LARGE): the caller
            # must do something else with it, not retry the transaction.
            return RecordRejectedError(
                f"produce to {topic}[{partition}] failed for transactional.id "
                f"{self._transactional_id!r}: {text}; abort the transaction",
                topic=topic,
                partition=partition,
                code=error.name(),
            )
        return self._transaction_error(f"produce to {topic}[{partition}]", exc)

    def flush(self, timeout: float = 30.0) -> int:
        """Deliver the queued records of the transaction; how many are still pending.

        Raises:
            TransactionError: the producer failed (e.g. fenced while flushing).
        """
        self._raise_if_fatal("flush")
        try:
            return super().flush(timeout)
        except KafkaException as exc:
            raise self._transaction_error("flush", exc) from exc
        except SystemError as exc:
            # confluent-kafka surfaces an error raised while it ran delivery callbacks
            # this way; the transaction cannot be committed, aborting tells more.
            raise TransactionError(f"flush failed for {self._transactional_id!r}: {exc}") from exc

    def send_offsets(
        self,
        offsets: Mapping[TopicPartition, int],
        group_metadata: Any,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit these consumer offsets (next offset to read) with the transaction."""
        notes = metadata or {}
        positions = [
            KafkaTopicPartition(tp.topic, tp.partition, offset, notes[tp])
            if tp in notes
            else _kafka_tp(tp, offset)
            for tp, offset in offsets.items()
        ]

        def send(timeout: float) -> None:
            self._producer.send_offsets_to_transaction(positions, group_metadata, timeout)

        operation = "send_offsets_to_transaction"
        attempts = 0

        def attempt(timeout: float) -> None:
            # A retry follows trouble as well: librdkafka serves the error callback
            # only from a poll, which this thread is not making meanwhile (soak seed
            # 506097: the first attempt timed out, the retry never returned).
            nonlocal attempts
            attempts += 1
            troubled = self._errors is not None and self._errors.troubled_within(_TROUBLE_WINDOW_S)
            if troubled or attempts > 1:
                self._on_helper(operation, send, timeout)
            else:
                send(timeout)

        self._retrying(operation, attempt, _SEND_OFFSETS_TIMEOUT_S)

    def _on_helper(self, operation: str, call: Callable[[float], None], timeout: float) -> None:
        """``call(timeout)`` on the helper thread, given up (with this producer) past its bound.

        A call librdkafka does not return from cannot be interrupted; without this
        the role thread would wait in it until the watchdog ends the process. Given
        up, the call keeps the client (nothing else touches it again: destroying a
        client with a call in flight is not safe), the caller aborts the batch and
        replaces the producer, whose ``init_transactions`` aborts the transaction.
        """
        if self._helper is None:
            # One thread per producer, started on first use: a thread per call
            # cost ~0.25 ms more per call (docs/performance.md).
            self._helper = SimpleQueue()
            threading.Thread(
                target=_serve_calls, args=(self._helper,), name=f"durafka-{operation}", daemon=True
            ).start()
        failure: list[BaseException] = []
        finished = threading.Lock()
        finished.acquire()
        self._helper.put((call, timeout, finished, failure))
        bound = timeout + _SLACK_S
        if not finished.acquire(timeout=bound):
            self._stuck = (
                f"the producer was given up: its {operation} did not return within "
                f"{bound:.0f} s after the cluster was unreachable (a known librdkafka problem)"
            )
            log.warning(
                "%s(%s) did not return within %.0f s after the cluster was unreachable "
                "(a known librdkafka problem): giving the producer up; a new one with "
                "the same transactional.id aborts its transaction",
                operation,
                self._transactional_id,
                bound,
            )
            raise ProducerGivenUpError(
                f"{operation} failed for transactional.id {self._transactional_id!r}: "
                f"{self._stuck}; create a new producer (its init_transactions aborts "
                "the transaction)"
            )
        if failure:
            raise failure[0]

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Flush and commit; records and offsets become visible together.

        Retriable errors are retried until ``timeout``. librdkafka then leaves the
        outcome open: the commit may have reached the coordinator, so it is neither
        aborted nor reported as failed, but as unknown.

        Raises:
            CommitOutcomeUnknownError: the commit did not finish within ``timeout``;
                call ``commit_transaction`` again to resume it.
            TransactionError: nothing was committed (``fatal`` False: abort and
                redo the batch) or the producer is unusable (``fatal`` True).
        """
        self._raise_if_fatal("commit_transaction")
        deadline = time.monotonic() + timeout
        backoff = 0.05
        while True:
            try:
                with tracked(f"commit_transaction({self._transactional_id})", timeout + _SLACK_S):
                    self._producer.commit_transaction(max(deadline - time.monotonic(), 0.001))
                self._in_transaction = False
                return
            except KafkaException as exc:
                error, text = _describe(exc)
                if error is not None and (error.fatal() or error.txn_requires_abort()):
                    raise self._transaction_error("commit_transaction", exc) from exc
                # A timeout, a retriable error or anything librdkafka does not call
                # abortable: the coordinator may have the commit already.
                if time.monotonic() + backoff >= deadline:
                    raise CommitOutcomeUnknownError(
                        f"commit_transaction for transactional.id {self._transactional_id!r} "
                        f"did not finish within {timeout:g} s ({text}): the transaction may "
                        "or may not be committed; call commit_transaction again to resume it"
                    ) from exc
                log.info("commit_transaction failed, retrying: %s", text)
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Abort the open transaction: its records and offsets are discarded (no-op if none)."""
        if not self._in_transaction:
            return
        self._retrying("abort_transaction", self._producer.abort_transaction, timeout)
        self._in_transaction = False

    def abandon(self) -> None:
        """Release the client without ending its transaction (idempotent).

        For a producer whose commit outcome is unknown: aborting could fail or even
        race the commit; the next ``init_transactions`` of its ``transactional.id``
        completes or aborts whatever it left at the coordinator.
        """
        if self._closed:
            return
        self._closed = True
        self._end_helper()
        if self._stuck is not None:
            return  # the client is the stuck call's: destroying it under that call is unsafe
        client = self._producer

        def destroy() -> None:
            with contextlib.suppress(Exception), warnings.catch_warnings():
                # confluent-kafka's close() tries to abort and warns when it cannot.
                warnings.simplefilter("ignore", RuntimeWarning)
                client.purge()
                client.close()

        # Not waited for (nor watched): librdkafka's destroy of a producer whose broker
        # was unreachable was seen blocking for minutes, and nothing needs it done.
        threading.Thread(target=destroy, name="durafka-abandoned-producer", daemon=True).start()

    def close(self) -> None:
        """Abort an open transaction (readers would wait for its timeout), then close."""
        if self._closed:
            return
        if self._stuck is not None:
            # The successor's init_transactions aborts the open transaction.
            self.abandon()
            return
        if self._fatal is not None:
            # Nothing can be delivered or aborted any more; confluent-kafka's close()
            # would still try to abort and warn about it.
            self._closed = True
            self._end_helper()
            self._producer.purge()
            with (
                warnings.catch_warnings(),
                tracked(f"producer close ({self._transactional_id})", _CLOSE_BOUND_S),
            ):
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    self._producer.close()
                except confluent_kafka.KafkaException as exc:
                    # confluent-kafka's close() repeats the fatal error (seen after a
                    # commit fenced by the coordinator's timeout): already reported.
                    log.debug("closing producer %s: %s", self._transactional_id, exc)
            return
        self._end_helper()
        if self._in_transaction:
            try:
                self.abort_transaction(_CLOSE_TIMEOUT_S)
            except TransactionError as exc:
                log.warning("could not abort the open transaction on close: %s", exc)
        super().close()

    def _end_helper(self) -> None:
        if self._helper is not None:
            self._helper.put(None)  # a helper stuck in a call ends if the call ever returns
            self._helper = None

    def _raise_if_fatal(self, operation: str) -> None:
        if self._fatal is not None:
            raise TransactionError(f"{operation}: {self._fatal}", fatal=True)
        if self._stuck is not None:
            raise ProducerGivenUpError(
                f"{operation} failed for transactional.id {self._transactional_id!r}: "
                f"{self._stuck}; create a new producer"
            )

    def _retrying(self, operation: str, call: Callable[[float], None], timeout: float) -> None:
        self._raise_if_fatal(operation)
        deadline = time.monotonic() + timeout
        backoff = 0.05
        while True:
            try:
                with tracked(f"{operation}({self._transactional_id})", timeout + _SLACK_S):
                    call(max(deadline - time.monotonic(), 0.001))
                return
            except KafkaException as exc:
                error, text = _describe(exc)
                retriable = error is not None and error.retriable() and not error.fatal()
                if not retriable or time.monotonic() + backoff >= deadline:
                    raise self._transaction_error(operation, exc) from exc
                log.info("%s failed, retrying: %s", operation, text)
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _transaction_error(self, operation: str, exc: KafkaException) -> TransactionError:
        error, text = _describe(exc)
        fatal = error is not None and error.fatal()
        advice = (
            "the producer is unusable (fenced by a newer producer with the same "
            "transactional.id, or a fatal error): close it and create a new one"
            if fatal
            else "abort the transaction and process the batch again"
        )
        failure = TransactionError(
            f"{operation} failed for transactional.id {self._transactional_id!r}: {text}; {advice}",
            fatal=fatal,
        )
        if fatal:
            self._fatal = failure
        return failure


class KafkaTransport:
    """Clients of one Kafka cluster (see :class:`durafka.transport.base.Transport`)."""

    def __init__(
        self,
        bootstrap: str,
        client_config: Mapping[str, str] | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        """Bind to the cluster at ``bootstrap`` (``host:port,...``); nothing connects yet.

        Args:
            bootstrap: the ``bootstrap.servers`` of the cluster.
            client_config: librdkafka settings for every client (e.g. security); a
                ``producer.``, ``consumer.`` or ``admin.`` prefix limits one to that
                kind of client (see :func:`durafka.transport.client_config.for_client`).
            connect_timeout: how long the first client waits for the cluster
                before failing with the cause (:meth:`connect`).
        """
        self.bootstrap = bootstrap
        self._client_config = dict(client_config or {})
        self._connect_timeout = connect_timeout
        self._errors = ClientErrors()
        self._connected = False
        self._connect_lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._partition_counts: dict[str, int] = {}

    def connect(self) -> None:
        """Wait until the cluster answers (once per transport).

        Every request of the transport itself (topics, metadata, groups) waits for
        it first, so the first of them, usually ``ensure_topics``, fails fast with
        the cause. Creating a client does not connect.

        Raises:
            ClusterConnectionError: it did not, within ``connect_timeout``; the
                message names the cause (connection refused, authentication
                failed, TLS failure, ...).
        """
        with self._connect_lock:
            if not self._connected:
                await_cluster(
                    self._admin_client(), self._errors, self.bootstrap, self._connect_timeout
                )
                self._connected = True

    def _base(self, kind: ClientKind) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "error_cb": self._errors,
            "logger": self._errors,
            **for_client(self._client_config, kind),
        }

    def consumer(self, group_id: str | None = None, **config: Any) -> KafkaConsumer:
        """A read_committed consumer; ``group_id=None`` for manual assignment only.

        ``config`` holds librdkafka settings, e.g. ``**{"session.timeout.ms": 6000}``.
        """
        layers: list[Mapping[str, Any]] = [_CONSUMER_DEFAULTS]
        if group_id is not None:
            layers.append(_GROUP_DEFAULTS)
        layers += [self._base("consumer"), config]
        merged = _merge(layers, _CONSUMER_PINNED, "consumer")
        # librdkafka insists on a group.id; a manual consumer never joins or commits to it.
        merged["group.id"] = group_id if group_id is not None else f"durafka-manual-{uuid.uuid4()}"
        return KafkaConsumer(merged, group_id)

    def producer(self, **config: Any) -> KafkaProducer:
        """An idempotent producer (``acks=all``, ``linger.ms=0`` unless overridden)."""
        layers = [_PRODUCER_DEFAULTS, self._base("producer"), config]
        merged = _merge(layers, _PRODUCER_PINNED, "producer")
        return KafkaProducer(merged)

    def transactional_producer(
        self, transactional_id: str, **config: Any
    ) -> KafkaTransactionalProducer:
        """A transactional producer (``transaction.timeout.ms`` 10000 unless overridden)."""
        merged = _merge(
            [_PRODUCER_DEFAULTS, _TRANSACTIONAL_DEFAULTS, self._base("producer"), config],
            {**_PRODUCER_PINNED, "transactional.id": transactional_id},
            "transactional producer",
        )
        return KafkaTransactionalProducer(merged)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = _create(AdminClient, self._base("admin"))
        return self._admin

    def admin(self) -> AdminClient:
        """The transport's confluent-kafka admin client, once the cluster answered."""
        self.connect()
        return self._admin_client()

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics; raise ``TopologyMismatchError`` if an existing one differs."""
        report = apply_topics(self.admin(), specs, timeout=30.0, cluster=self.bootstrap)
        if report.created:
            log.info("created topics %s", ", ".join(report.created))

    def describe_topics(self, specs: Sequence[TopicSpec]) -> dict[str, TopicSpec]:
        """The existing topics of ``specs`` as the cluster holds them (see the contract)."""
        return describe_topics(self._admin_client(), specs, timeout=_REQUEST_TIMEOUT_S)

    def group_assignments(self, group_id: str) -> dict[str, list[TopicPartition]]:
        """The live members of consumer group ``group_id`` and their assigned partitions."""
        try:
            future = self.admin().describe_consumer_groups(
                [group_id], request_timeout=_REQUEST_TIMEOUT_S
            )[group_id]
            with tracked(f"describe group {group_id}", _REQUEST_TIMEOUT_S + _SLACK_S):
                description = future.result()
        except KafkaException as exc:
            raise TransportError(
                f"describing consumer group {group_id!r} failed: {_describe(exc)[1]}"
            ) from exc
        members: dict[str, list[TopicPartition]] = {}
        for member in description.members:
            assignment = member.assignment
            tps = assignment.topic_partitions if assignment is not None else []
            members[member.member_id] = sorted(_ours(tps))
        return members

    def partition_count(self, topic: str) -> int:
        """The number of partitions of ``topic`` (cached: counts are fixed by the topology)."""
        count = self._partition_counts.get(topic)
        if count is not None:
            return count
        try:
            with tracked(f"metadata of {topic}", _REQUEST_TIMEOUT_S + _SLACK_S):
                metadata = self.admin().list_topics(topic, timeout=_REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            raise TransportError(f"metadata of topic {topic!r}: {_describe(exc)[1]}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            reason = found.error.str() if found is not None and found.error else "no partitions"
            raise TransportError(
                f"topic {topic!r} is not available on {self.bootstrap}: {reason}; create it "
                "first (Transport.ensure_topics)"
            )
        count = self._partition_counts[topic] = len(found.partitions)
        return count

    def close(self) -> None:
        """Drop the cached admin client and metadata (clients are closed by their owners)."""
        self._admin = None
        self._partition_counts.clear()
