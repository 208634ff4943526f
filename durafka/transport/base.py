"""The transport contract shared by Kafka and ``memory://``.

The names and semantics follow confluent-kafka (which the Kafka implementation
wraps thinly), so that a reader who knows Kafka knows these. Records are never
wrapped on the hot path: confluent-kafka's ``Message`` already satisfies
:class:`Record`, and the memory transport has its own class with the same methods.

Semantics every implementation guarantees:

* consumers read with ``isolation.level=read_committed`` and never auto-commit;
* a transactional producer's records become visible atomically at ``commit()``,
  together with the consumer offsets passed to ``send_offsets()``; ``abort()``
  discards both;
* delivery callbacks report the offset each record got (used as the changelog
  checkpoint); they run at the latest during ``flush()``;
* the partition of every record is chosen by the caller (``partition_for``).

:class:`AsyncTransport` is the asyncio client's narrower contract (produce and
wait for the acknowledgement, feed a view from a compacted topic), met by
aiokafka on Kafka and by any :class:`Transport` plus threads otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from durafka.errors import DurafkaError
from durafka.topology import TopicSpec
from durafka.transport.limits import Headers


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """A partition of a topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class OutgoingRecord(NamedTuple):
    """A record to produce: where it goes and what it holds (``value`` None: a tombstone).

    ``headers``: Kafka record headers, in order (a record forwarded as it came keeps
    its headers; durafka's own records have none).
    """

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


class Record(Protocol):
    """A consumed record (confluent-kafka's ``Message`` has exactly these methods)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> RecordHeaders:
        """The record's headers in order (None: it has none); a value may be None.

        Both transports return ``(name, bytes | None)`` pairs; the type also admits
        what confluent-kafka's type hints allow (``str`` values, a dict).
        """
        ...

    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


RecordHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""What :meth:`Record.headers` returns."""


def header_pairs(headers: RecordHeaders) -> list[tuple[str, bytes | None]]:
    """A consumed record's headers as ``(name, bytes | None)`` pairs, in order."""
    if not headers:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


DeliveryCallback = Callable[[Any, Record], None]
"""``on_delivery(err, record)``; ``err`` is ``None`` on success, ``record.offset()`` is set.

On failure ``err`` is the client's error (confluent-kafka's ``KafkaError``; the
``memory://`` producer refuses records at ``produce()`` instead and never reports one).
"""

#: Kafka protocol errors about one record (or the batch it was sent in) that sending
#: it again cannot fix: CORRUPT_MESSAGE, INVALID_FETCH_SIZE (sic, the record's size),
#: MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_TIMESTAMP, INVALID_RECORD.
RECORD_ERROR_CODES: Final = frozenset({2, 4, 10, 18, 32, 87})


def record_error(err: Any) -> str | None:
    """The error's name when a failed delivery is the record's own fault, else None.

    Such an error (:data:`RECORD_ERROR_CODES`, e.g. ``MSG_SIZE_TOO_LARGE`` when the
    topic's ``max.message.bytes`` is below the record) comes back every time the
    same record is produced; anything else (timeouts, leaders moving) may pass.
    """
    code = getattr(err, "code", None)
    if not callable(code) or code() not in RECORD_ERROR_CODES:
        return None
    name = getattr(err, "name", None)
    return str(name()) if callable(name) else str(code())


PartitionsCallback = Callable[[list[TopicPartition]], None]


class Consumer(Protocol):
    """A read_committed consumer, either in a group (``subscribe``) or manual (``assign``)."""

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        """Join the consumer group (cooperative: callbacks get only the increments).

        Callbacks run inside :meth:`poll_batch`. ``on_assign`` partitions start at the
        group's committed offset (or the beginning). ``on_revoke`` is also called for
        partitions lost without a clean revoke.
        """
        ...

    def assign(self, offsets: Mapping[TopicPartition, int | None]) -> None:
        """Read these partitions by hand (no group), from the given offset (None: beginning)."""
        ...

    def unassign(self) -> None:
        """Stop reading every manually assigned partition."""
        ...

    def poll_batch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first.

        Records with ``error()`` set are never returned: transient errors are logged,
        fatal ones raise :class:`durafka.errors.DurafkaError`.
        """
        ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching these partitions until :meth:`resume` (unassigned ones are ignored)."""
        ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch these paused partitions again (unassigned ones are ignored)."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Continue reading ``partition`` at ``offset`` (the next poll sees it)."""
        ...

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer will read from ``partition``."""
        ...

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing was committed)."""
        ...

    def committed_metadata(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, str]:
        """The metadata committed with the group's offsets ("" where none was)."""
        ...

    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        """``(low, high)`` offsets of ``partition`` (high: offset after the last stable record)."""
        ...

    def assignment(self) -> list[TopicPartition]: ...

    def group_metadata(self) -> Any:
        """Opaque group metadata for :meth:`TransactionalProducer.send_offsets` (EOS v2 fencing)."""
        ...

    def close(self) -> None: ...


class Producer(Protocol):
    """An idempotent, non-transactional producer (clients)."""

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue a record for ``partition`` (``headers``: Kafka record headers, in order).

        Raises:
            TransportError: (:class:`~durafka.errors.TransactionError` on a
                transactional producer) e.g. the record is larger than the producer's
                ``message.max.bytes`` or the topic's ``max.message.bytes``
                (:mod:`durafka.transport.limits`).
        """
        ...

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery callbacks."""
        ...

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every record to be delivered; returns how many are still pending."""
        ...

    def close(self) -> None: ...


class TransactionalProducer(Producer, Protocol):
    """A producer with one ``transactional.id`` (fenced against zombies).

    Its calls raise :class:`durafka.errors.TransactionError`: when ``fatal`` is False,
    :meth:`abort_transaction` recovers the producer; when True (fenced by a newer
    producer with the same id), close it and create a new one.
    """

    def init_transactions(self, timeout: float = 30.0) -> None: ...
    def begin_transaction(self) -> None: ...

    def send_offsets(
        self,
        offsets: Mapping[TopicPartition, int],
        group_metadata: Any,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit these consumer offsets (next offset to read) as part of the transaction.

        ``metadata`` is Kafka's offset commit metadata: a string per partition, at
        most ``offset.metadata.max.bytes`` (4096 by default), kept with the offset
        and read back with :meth:`Consumer.committed_metadata`.
        """
        ...

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Commit the open transaction.

        Raises:
            CommitOutcomeUnknownError: not finished within ``timeout`` (the outcome is
                unknown; calling it again resumes the commit).
            TransactionError: not committed (abortable) or the producer is unusable.
        """
        ...

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Discard the open transaction's records and offsets; a no-op when none is open."""
        ...

    def abandon(self) -> None:
        """Release the producer without ending its transaction.

        For a producer in an unknown state (a commit whose outcome is unknown): the
        next ``init_transactions`` of its ``transactional.id`` resolves the transaction.
        """
        ...


class Transport(Protocol):
    """A factory of clients bound to one cluster (or one in-process broker)."""

    bootstrap: str

    def consumer(self, group_id: str | None = None, **config: Any) -> Consumer:
        """A read_committed consumer; ``group_id=None`` for manual assignment only."""
        ...

    def producer(self, **config: Any) -> Producer: ...

    def transactional_producer(
        self, transactional_id: str, **config: Any
    ) -> TransactionalProducer: ...

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics; raise ``TopologyMismatchError`` on a mismatch."""
        ...

    def describe_topics(self, specs: Sequence[TopicSpec]) -> dict[str, TopicSpec]:
        """The existing topics of ``specs`` as the broker holds them, to compare with them.

        Returns:
            By topic name, for each topic that exists: its partition count,
            replication factor, and the values of the configs its spec sets (a
            config the broker does not report is left out). Missing topics are absent.
        """
        ...

    def partition_count(self, topic: str) -> int: ...

    def group_assignments(self, group_id: str) -> dict[str, list[TopicPartition]]:
        """The live members of consumer group ``group_id`` and the partitions each owns."""
        ...

    def close(self) -> None: ...


# -- reading compacted topics, and the asyncio client's contract ----------------------------


class FeedTarget(Protocol):
    """What a feeder fills from a compacted topic (the status view, the entity view)."""

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Take a batch of ``(key, value)`` records, oldest first (``None`` value: deleted)."""
        ...

    def mark_ready(self) -> None:
        """The feeder reached the high watermarks it saw when it started."""
        ...

    def fail(self, error: DurafkaError) -> None:
        """The feeder stopped for good with ``error``."""
        ...

    def __len__(self) -> int: ...


class AsyncFeeder(Protocol):
    """A running feeder of a :class:`FeedTarget`, stopped from asyncio code."""

    async def stop(self) -> None:
        """Stop reading and release the consumer."""
        ...


class AsyncTransport(Protocol):
    """What the asyncio client needs of a cluster, without blocking its event loop.

    Call :meth:`start` first; :meth:`close` releases everything :meth:`start`
    made, after which :meth:`start` may be called again.
    """

    async def start(self) -> None:
        """Connect the producer."""
        ...

    async def partition_count(self, topic: str) -> int:
        """The number of partitions of ``topic``.

        Raises:
            TransportError: the topic does not exist.
        """
        ...

    async def send_all(self, records: Sequence[OutgoingRecord]) -> None:
        """Produce ``records`` and return once the broker acknowledged every one.

        Raises:
            TransportError: a record failed, or was not acknowledged in time.
        """
        ...

    async def feed(self, target: FeedTarget, topic: str) -> AsyncFeeder:
        """Start reading the compacted ``topic`` from the beginning into ``target``."""
        ...

    def sync_transport(self) -> AbstractContextManager[Transport]:
        """A :class:`Transport` to the same cluster for blocking scans (run them in a thread)."""
        ...

    async def close(self) -> None:
        """Release the producer (and a transport this one opened)."""
        ...
