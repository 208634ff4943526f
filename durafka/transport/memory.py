"""``memory://``: an in-process broker with Kafka's semantics, for embedded mode and tests.

The same processor, worker and client code runs on it unchanged. It is not a
replacement for Kafka in production: nothing is persisted and nothing is shared
between processes.

How Kafka is emulated, and why:

* **Logs.** Each partition is an append-only list of records with offsets.
  Offsets are taken at ``produce()`` time, like Kafka's, so delivery callbacks
  report real offsets as soon as they run (``poll()``, ``flush()`` or the end of
  ``commit_transaction()``), also inside an open transaction: the changelog
  checkpoint taken from delivery reports works exactly as on Kafka.
* **Transactions and read_committed.** Records produced in a transaction are
  appended invisible; ``commit_transaction()`` makes them visible together with
  the group offsets given to ``send_offsets()``, in one step under the broker
  lock. ``abort_transaction()`` leaves them invisible forever and drops the
  offsets. As on Kafka, consumers read only up to the *last stable offset*
  (the first offset of the oldest open transaction on the partition), so an
  open transaction also holds back later non-transactional records, and every
  commit or abort appends a control marker that takes one offset and is never
  returned. So "last record offset = high watermark - 1" fails here too, and
  code relying on it fails in memory tests rather than in production.
* **Transaction timeout.** A transaction open longer than
  ``transaction.timeout.ms`` (default 10000) is aborted by the broker, which
  also bumps the producer's epoch, as Kafka's transaction coordinator does: the
  producer's next transactional call raises a fatal
  :class:`~durafka.errors.TransactionError` ("fenced", librdkafka's
  ``_FENCED``), the same error a newer producer with its id would cause.
* **Fencing.** ``init_transactions()`` aborts the open transaction of an older
  producer with the same ``transactional.id``; every later call of that older
  producer raises a fatal :class:`~durafka.errors.TransactionError`. Offsets
  sent with group metadata of a member that has left its group, or taken
  before a rebalance the member has since gone through, are refused (EOS v2).
* **Compaction** (``cleanup.policy`` containing ``compact``). When a partition
  has doubled since its last compaction (and holds at least 1024 entries), the
  stable part is rewritten keeping the latest record per key; aborted records
  and markers go, and a tombstone survives one compaction so that readers get
  a chance to see it, and, as on Kafka, is kept until it is older than the
  topic's ``delete.retention.ms`` when the topic sets it. Offsets never change;
  consumers skip the holes. :meth:`MemoryBroker.compact` forces it (tests).
* **Consumer groups.** Partitions of the subscribed topics are spread round
  robin over the group's members in join order, recomputed on join, leave,
  re-subscribe and topic creation. A member learns about it in its next
  ``poll_batch()``, which calls ``on_revoke`` / ``on_assign`` with the
  increments only (cooperative). As librdkafka may, the poll runs the
  callbacks *after* taking the records it returns: a batch can hold records of
  a partition its ``on_revoke`` just took away (code that commits them anyway
  loses them; the contract tests catch it here too). A partition moving from A to B is handed to B
  only after A has run its ``on_revoke`` (so A can finish its transaction
  first); newly assigned partitions start at the group's committed offset or
  at the beginning.

Not emulated: retention of ``delete`` topics (logs grow until the broker is
reset), ``max.poll.interval.ms`` (a member that stops polling keeps its
partitions until it is closed), and ``auto.offset.reset`` on a seek past the end.

Performance: ``poll_batch()`` takes the broker lock once, finds each
partition's position by arithmetic (or a binary search once compacted) and
slices the list; nothing is copied per call beyond the returned records.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, ClassVar, Final

from durafka.errors import (
    ConfigurationError,
    DurafkaError,
    RecordRejectedError,
    TransactionError,
    TransportError,
)
from durafka.topology import TopicSpec, mismatch_error, topic_differences
from durafka.transport.base import (
    DeliveryCallback,
    PartitionsCallback,
    Record,
    TopicPartition,
)
from durafka.transport.limits import (
    DEFAULT_MESSAGE_MAX_BYTES,
    Headers,
    max_record_size,
    record_size,
)

__all__ = [
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryGroupMetadata",
    "MemoryProducer",
    "MemoryRecord",
    "MemoryTransactionalProducer",
    "MemoryTransport",
]

SCHEME: Final = "memory://"
_TIMESTAMP_CREATE_TIME: Final = 1  # confluent_kafka.TIMESTAMP_CREATE_TIME
_MIN_COMPACTION_ENTRIES: Final = 1024
_DEFAULT_TRANSACTION_TIMEOUT_MS: Final = 10_000


class MemoryRecord:
    """A record of the memory broker, with the methods of confluent-kafka's ``Message``."""

    __slots__ = (
        "_headers",
        "_key",
        "_offset",
        "_partition",
        "_timestamp",
        "_topic",
        "_value",
        "_visible",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        visible: bool,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers
        self._timestamp = timestamp_ms
        # False for control markers, aborted records and records of open transactions.
        self._visible = visible

    def topic(self) -> str:
        """The topic name."""
        return self._topic

    def partition(self) -> int:
        """The partition number."""
        return self._partition

    def offset(self) -> int:
        """The offset in the partition."""
        return self._offset

    def key(self) -> bytes | None:
        """The key bytes."""
        return self._key

    def value(self) -> bytes | None:
        """The value bytes (None: a tombstone)."""
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        """The headers in produce order (None: the record has none), as a new list."""
        return None if self._headers is None else list(self._headers)

    def timestamp(self) -> tuple[int, int]:
        """``(TIMESTAMP_CREATE_TIME, milliseconds since the epoch)``."""
        return (_TIMESTAMP_CREATE_TIME, self._timestamp)

    def error(self) -> None:
        """Always None: the memory broker never returns error records."""
        return None

    def __repr__(self) -> str:
        return (
            f"MemoryRecord({self._topic}[{self._partition}]@{self._offset}, "
            f"key={self._key!r}, value={self._value!r})"
        )


_record_offset = attrgetter("_offset")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _message_max_bytes(config: Mapping[str, Any]) -> int:
    return int(config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))


class _PartitionLog:
    """One partition: records (visible or not) in offset order, and the open transactions."""

    __slots__ = (
        "compact",
        "compact_at",
        "delete_retention_ms",
        "dense",
        "max_record_size",
        "next_offset",
        "open_txns",
        "partition",
        "records",
        "tombstone_horizon",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        compact: bool,
        max_record_size: int,
        delete_retention_ms: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.compact = compact
        #: How long compaction keeps a tombstone (None: one compaction only).
        self.delete_retention_ms = delete_retention_ms
        #: The largest record the topic takes (``max.message.bytes``).
        self.max_record_size = max_record_size
        self.records: list[MemoryRecord] = []
        self.next_offset = 0
        # True while records[i] has offset records[0].offset + i (no compaction holes).
        self.dense = True
        # First offset of each open transaction that wrote here: bounds read_committed.
        self.open_txns: dict[_Txn, int] = {}
        self.compact_at = _MIN_COMPACTION_ENTRIES
        self.tombstone_horizon = 0

    def stable_end(self) -> int:
        """The last stable offset: read_committed consumers read below it."""
        if self.open_txns:
            return min(self.open_txns.values())
        return self.next_offset

    def index_of(self, offset: int) -> int:
        """Index of the first entry with an offset >= ``offset``."""
        records = self.records
        if not records:
            return 0
        if self.dense:
            index = offset - records[0]._offset
            return 0 if index < 0 else min(index, len(records))
        return bisect_left(records, offset, key=_record_offset)

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        visible: bool,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> MemoryRecord:
        record = MemoryRecord(
            self.topic, self.partition, self.next_offset, key, value, _now_ms(), visible, headers
        )
        self.records.append(record)
        self.next_offset += 1
        return record

    def read(self, position: int, limit: int, out: list[Record]) -> int:
        """Append up to ``limit`` visible records from ``position`` to ``out``; new position."""
        end = self.stable_end()
        if position >= end:
            return position
        records = self.records
        i = self.index_of(position)
        j = self.index_of(end)
        while i < j and limit > 0:
            k = min(j, i + limit)
            visible = [r for r in records[i:k] if r._visible]
            out.extend(visible)
            limit -= len(visible)
            i = k
        # Past everything below the stable end (markers and aborted records included),
        # or just past the last entry looked at when ``limit`` ran out first.
        return end if i >= j else records[i - 1]._offset + 1

    def maybe_compact(self) -> None:
        if self.compact and len(self.records) >= self.compact_at:
            self.compact_now()

    def compact_now(self) -> None:
        """Keep the latest visible record per key below the stable end; keep the rest."""
        end = self.stable_end()
        split = self.index_of(end)
        seen: set[bytes | None] = set()
        kept: list[MemoryRecord] = []
        retention = self.delete_retention_ms
        expired = _now_ms() - retention if retention is not None else None
        for record in reversed(self.records[:split]):
            if not record._visible or record._key in seen:
                continue
            seen.add(record._key)
            # A tombstone already present at the previous compaction has had its chance,
            # once it is older than the topic's delete.retention.ms.
            if (
                record._value is None
                and record._offset < self.tombstone_horizon
                and (expired is None or record._timestamp <= expired)
            ):
                continue
            kept.append(record)
        kept.reverse()
        kept.extend(self.records[split:])
        self.records = kept
        self.dense = False
        self.tombstone_horizon = end
        self.compact_at = max(_MIN_COMPACTION_ENTRIES, 2 * len(kept))


class _Topic:
    __slots__ = ("logs", "spec")

    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        policy = spec.config.get("cleanup.policy", "delete")
        compact = "compact" in (p.strip() for p in policy.split(","))
        # The broker's check (of a one-record batch), expressed in producer terms.
        limit = max_record_size({"message.max.bytes": sys.maxsize}, spec.config)
        retention = spec.config.get("delete.retention.ms")
        tombstones_kept = int(retention) if retention is not None else None
        self.logs = [
            _PartitionLog(spec.name, p, compact, limit, tombstones_kept)
            for p in range(spec.partitions)
        ]


class _Txn:
    """An open transaction of one producer epoch."""

    __slots__ = (
        "abort_reason",
        "deadline",
        "epoch",
        "logs",
        "metadata",
        "offsets",
        "records",
        "tid",
    )

    def __init__(self, tid: str, epoch: int, deadline: float) -> None:
        self.tid = tid
        self.epoch = epoch
        self.deadline = deadline
        self.records: list[MemoryRecord] = []
        self.logs: list[_PartitionLog] = []
        self.offsets: dict[str, dict[TopicPartition, int]] = {}
        self.metadata: dict[str, dict[TopicPartition, str]] = {}
        self.abort_reason: str | None = None


class _Member:
    __slots__ = ("generation", "member_id", "owned", "synced", "topics")

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self.topics: tuple[str, ...] = ()
        self.owned: set[TopicPartition] = set()
        self.synced = -1  # the group version this member last caught up with
        self.generation = -1  # the group generation of its last completed sync


class _Group:
    __slots__ = ("committed", "generation", "members", "metadata", "owner", "target", "version")

    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.metadata: dict[TopicPartition, str] = {}
        self.members: dict[str, _Member] = {}  # insertion order = join order
        self.target: dict[TopicPartition, _Member] = {}
        self.owner: dict[TopicPartition, _Member] = {}
        self.generation = 0  # bumped when the target assignment is recomputed
        self.version = 0  # bumped on every change a member must look at


@dataclass(frozen=True)
class MemoryGroupMetadata:
    """What ``MemoryConsumer.group_metadata()`` returns (opaque to callers)."""

    broker_name: str
    group_id: str
    member_id: str | None
    generation: int


class MemoryBroker:
    """A process-wide in-memory broker: topics, groups, transactions, one lock.

    Get one with :meth:`get` (``memory://`` is ``get("")``, ``memory://name`` is
    ``get("name")``); :meth:`reset` forgets them (tests). All state is guarded by
    one lock; consumers wait on its condition variable for new data.
    """

    _instances: ClassVar[dict[str, MemoryBroker]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "") -> None:
        """Create a standalone broker (prefer :meth:`get` to share one per name)."""
        self.name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._epochs: dict[str, int] = {}
        self._open_txns: dict[str, _Txn] = {}
        self._next_txn_deadline = math.inf
        self._member_ids = itertools.count(1)

    @classmethod
    def get(cls, name: str = "") -> MemoryBroker:
        """The broker called ``name`` in this process, created on first use."""
        with cls._instances_lock:
            broker = cls._instances.get(name)
            if broker is None:
                broker = cls._instances[name] = MemoryBroker(name)
            return broker

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget the broker ``name`` (every broker if None); the next :meth:`get` starts empty.

        Clients already holding the old broker keep using it.
        """
        with cls._instances_lock:
            if name is None:
                cls._instances.clear()
            else:
                cls._instances.pop(name, None)

    @property
    def url(self) -> str:
        """The bootstrap string naming this broker, e.g. ``"memory://"``."""
        return f"{SCHEME}{self.name}"

    def topics(self) -> dict[str, TopicSpec]:
        """The existing topics and the specs they were created with."""
        with self._lock:
            return {name: topic.spec for name, topic in self._topics.items()}

    def lag(self, group_id: str, topic: str) -> int:
        """Records of ``topic`` that group ``group_id`` has not committed past.

        Counts committed records at or after the group's offset (from the beginning
        where it has none) plus records in open transactions, so that 0 means
        nothing is in flight. Markers and aborted records do not count. Costs
        O(lag), which is what a test waiting for idleness needs.
        """
        with self._lock:
            group = self._groups.get(group_id)
            committed = group.committed if group is not None else {}
            total = 0
            for log in self._topic(topic).logs:
                start = committed.get(TopicPartition(topic, log.partition), 0)
                records = log.records
                first, end = log.index_of(start), log.index_of(log.stable_end())
                total += sum(1 for k in range(first, end) if records[k]._visible)
                for txn in log.open_txns:
                    total += sum(
                        1
                        for r in txn.records
                        if r._partition == log.partition
                        and r._topic == topic
                        and r._offset >= start
                    )
            return total

    def expire_member(self, group_id: str, member_id: str) -> None:
        """Drop a member from its group, as the coordinator does when its session times out.

        Its partitions go to the other members at once; its consumer learns of it in
        its next poll (``on_revoke`` for everything it owned, then it joins again as a
        new member), and until then it is a zombie: offsets it sends are refused.
        """
        with self._lock:
            group = self._groups.get(group_id)
            member = group.members.pop(member_id, None) if group is not None else None
            if group is None or member is None:
                raise ConfigurationError(f"group {group_id!r} has no member {member_id!r}")
            for tp, owner in list(group.owner.items()):
                if owner is member:
                    del group.owner[tp]
            self._rebalance(group)

    def compact(self, topic: str) -> None:
        """Compact every partition of ``topic`` now (it must be a compacted topic)."""
        with self._lock:
            for log in self._topic(topic).logs:
                if not log.compact:
                    raise ConfigurationError(
                        f"topic {topic!r} does not have cleanup.policy=compact"
                    )
                log.compact_now()

    # -- internals, called with the lock held ------------------------------------------

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise TransportError(
                f"topic {name!r} does not exist on {self.url}; create it first "
                "(Transport.ensure_topics)"
            )
        return topic

    def _log(self, topic: str, partition: int) -> _PartitionLog:
        logs = self._topic(topic).logs
        if not 0 <= partition < len(logs):
            raise TransportError(
                f"topic {topic!r} has {len(logs)} partitions, partition {partition} does not exist"
            )
        return logs[partition]

    def _group(self, group_id: str) -> _Group:
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = _Group()
        return group

    def _ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        problems: list[str] = []
        for spec in specs:
            if spec.partitions < 1:
                raise ConfigurationError(f"{spec.name}: partitions must be >= 1")
            existing = self._topics.get(spec.name)
            if existing is not None:
                problems += topic_differences(spec, existing.spec)
        if problems:
            raise mismatch_error(problems, self.url)
        created = {s.name for s in specs if s.name not in self._topics}
        for spec in specs:
            if spec.name in created:
                self._topics[spec.name] = _Topic(spec)
        if created:
            for group in self._groups.values():
                if any(created.intersection(m.topics) for m in group.members.values()):
                    self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        """Recompute the target assignment: round robin per topic over members in join order."""
        subscribers: dict[str, list[_Member]] = {}
        for member in group.members.values():
            for name in member.topics:
                subscribers.setdefault(name, []).append(member)
        target: dict[TopicPartition, _Member] = {}
        for name, members in subscribers.items():
            topic = self._topics.get(name)
            if topic is None:
                continue
            for p in range(len(topic.logs)):
                target[TopicPartition(name, p)] = members[p % len(members)]
        group.target = target
        group.generation += 1
        group.version += 1
        self._changed.notify_all()

    def _release(
        self, group: _Group, member: _Member, partitions: Iterable[TopicPartition]
    ) -> None:
        released = False
        for tp in partitions:
            member.owned.discard(tp)
            if group.owner.get(tp) is member:
                del group.owner[tp]
                released = True
        if released:
            group.version += 1  # members waiting for these partitions take them now
            self._changed.notify_all()

    def _expire_transactions(self, now: float) -> None:
        if now < self._next_txn_deadline:
            return
        for txn in [t for t in self._open_txns.values() if t.deadline <= now]:
            self._end_transaction(txn, commit=False)
            txn.abort_reason = (
                "the transaction was open longer than transaction.timeout.ms: the broker "
                "aborted it and bumped the producer's epoch"
            )
            if self._epochs.get(txn.tid) == txn.epoch:
                self._epochs[txn.tid] = txn.epoch + 1

    def _end_transaction(self, txn: _Txn, commit: bool) -> None:
        if commit:
            for record in txn.records:
                record._visible = True
            for group_id, offsets in txn.offsets.items():
                group = self._group(group_id)
                group.committed.update(offsets)
                # As Kafka: an offset committed without metadata clears it.
                notes = txn.metadata.get(group_id, {})
                for tp in offsets:
                    group.metadata[tp] = notes.get(tp, "")
        for log in txn.logs:
            del log.open_txns[txn]
            log.append(None, None, visible=False)  # the control marker takes an offset
        if self._open_txns.get(txn.tid) is txn:
            del self._open_txns[txn.tid]
            self._next_txn_deadline = min(
                (t.deadline for t in self._open_txns.values()), default=math.inf
            )
        if commit:
            for log in txn.logs:
                log.maybe_compact()
        self._changed.notify_all()

    def _check_group_metadata(self, metadata: Any) -> str:
        if not isinstance(metadata, MemoryGroupMetadata) or metadata.broker_name != self.name:
            raise TransactionError(
                f"send_offsets() needs the group_metadata() of a consumer of {self.url}, "
                f"got {metadata!r}"
            )
        if metadata.member_id is not None:
            group = self._group(metadata.group_id)
            member = group.members.get(metadata.member_id)
            if member is None:
                raise TransactionError(
                    f"consumer {metadata.member_id} is no longer a member of group "
                    f"{metadata.group_id!r}; its offsets are refused (zombie fencing). Abort "
                    "the transaction."
                )
            if member.generation != metadata.generation:
                raise TransactionError(
                    f"group metadata of {metadata.member_id} in group {metadata.group_id!r} is "
                    f"from generation {metadata.generation}, the member is at "
                    f"{member.generation} after a rebalance; abort the transaction and take "
                    "fresh group metadata."
                )
        return metadata.group_id


class _Assigned:
    """A partition assigned to a consumer: its log and where the consumer reads next."""

    __slots__ = ("log", "paused", "position", "tp")

    def __init__(self, tp: TopicPartition, log: _PartitionLog, position: int) -> None:
        self.tp = tp
        self.log = log
        self.position = position
        self.paused = False


class MemoryConsumer:
    """A read_committed consumer of a :class:`MemoryBroker` (see the module docstring)."""

    def __init__(self, broker: MemoryBroker, group_id: str | None = None) -> None:
        """Create a consumer; ``group_id=None`` allows manual assignment only."""
        self._broker = broker
        self._group_id = group_id
        self._group: _Group | None = None
        self._member: _Member | None = None
        self._on_assign: PartitionsCallback | None = None
        self._on_revoke: PartitionsCallback | None = None
        self._manual = False
        self._assigned: dict[TopicPartition, _Assigned] = {}
        self._fetch_order: list[_Assigned] = []
        self._next_first = 0
        self._closed = False

    # -- assignment --------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        """Join the group (see :meth:`durafka.transport.base.Consumer.subscribe`)."""
        self._check_open()
        if self._group_id is None:
            raise ConfigurationError("subscribe() needs a consumer created with a group_id")
        if self._manual:
            raise TransportError("this consumer uses assign(); it cannot also subscribe()")
        self._on_assign, self._on_revoke = on_assign, on_revoke
        broker = self._broker
        with broker._lock:
            group = self._group = broker._group(self._group_id)
            if self._member is None:
                member_id = f"{self._group_id}-member-{next(broker._member_ids)}"
                self._member = _Member(member_id)
                group.members[member_id] = self._member
            self._member.topics = tuple(dict.fromkeys(topics))
            broker._rebalance(group)

    def assign(self, offsets: Mapping[TopicPartition, int | None]) -> None:
        """Read these partitions by hand, from the given offsets (None: the beginning)."""
        self._check_open()
        if self._member is not None:
            raise TransportError("this consumer is subscribed to a group; it cannot assign()")
        broker = self._broker
        with broker._lock:
            assigned: dict[TopicPartition, _Assigned] = {}
            for tp, offset in offsets.items():
                log = broker._log(tp.topic, tp.partition)
                assigned[tp] = _Assigned(tp, log, 0 if offset is None else offset)
            self._manual = True
            self._assigned = assigned
            self._fetch_order = list(assigned.values())

    def unassign(self) -> None:
        """Stop reading every manually assigned partition."""
        self._check_open()
        if self._member is not None:
            raise TransportError("this consumer is subscribed to a group; it cannot unassign()")
        with self._broker._lock:
            self._assigned = {}
            self._fetch_order = []

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer currently reads."""
        with self._broker._lock:
            return sorted(self._assigned)

    def _sync_group(self) -> None:
        """Run the pending rebalance of this member (callbacks outside the lock)."""
        broker, group, member = self._broker, self._group, self._member
        assert group is not None and member is not None
        with broker._lock:
            version = group.version
            revoked = sorted(tp for tp in member.owned if group.target.get(tp) is not member)
        if revoked and self._on_revoke is not None:
            # Still owned while the callback runs: it may finish its transaction.
            self._on_revoke(revoked)
        with broker._lock:
            if revoked:
                for tp in revoked:
                    self._assigned.pop(tp, None)
                broker._release(group, member, revoked)
            added = sorted(
                tp
                for tp, m in group.target.items()
                if m is member and tp not in member.owned and tp not in group.owner
            )
            for tp in added:
                group.owner[tp] = member
                member.owned.add(tp)
                log = broker._log(tp.topic, tp.partition)
                self._assigned[tp] = _Assigned(tp, log, group.committed.get(tp, 0))
            if revoked or added:
                self._fetch_order = [self._assigned[tp] for tp in sorted(self._assigned)]
            member.synced = version
            member.generation = group.generation
            expired = member.member_id not in group.members
            if expired:
                # Its session timed out (expire_member): join again as a new member.
                member.owned.clear()
                self._assigned = {}
                self._fetch_order = []
                joined = f"{self._group_id}-member-{next(broker._member_ids)}"
                self._member = _Member(joined)
                self._member.topics = member.topics
                group.members[joined] = self._member
                broker._rebalance(group)
        if added and self._on_assign is not None:
            self._on_assign(added)

    # -- reading -----------------------------------------------------------------------

    def poll_batch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` committed records, waiting up to ``timeout`` s for the first."""
        self._check_open()
        broker = self._broker
        group = self._group
        deadline = time.monotonic() + timeout
        while True:
            member = self._member  # a new one after its session expired
            with broker._changed:
                now = time.monotonic()
                broker._expire_transactions(now)
                records = self._fetch(max_records)
                rebalance_due = (
                    member is not None and group is not None and member.synced != group.version
                )
                if not records and not rebalance_due:
                    remaining = deadline - now
                    if remaining <= 0:
                        return records
                    broker._changed.wait(remaining)
                    continue
            if rebalance_due:
                # As in librdkafka, rebalance callbacks run inside the poll, after the
                # records it returns were taken: they may belong to a partition that
                # the callback just revoked.
                self._sync_group()
            if records:
                return records

    def _fetch(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        order = self._fetch_order
        n = len(order)
        if n == 0:
            return out
        # Start at a different partition each call so that one busy partition cannot
        # starve the others.
        first = self._next_first % n
        self._next_first = first + 1
        for k in range(n):
            assigned = order[(first + k) % n]
            if assigned.paused or assigned.position >= assigned.log.next_offset:
                continue
            assigned.position = assigned.log.read(assigned.position, max_records - len(out), out)
            if len(out) >= max_records:
                break
        return out

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop returning records of these partitions until :meth:`resume`.

        Partitions not assigned are ignored, as librdkafka does.
        """
        self._set_paused(partitions, True)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Return records of these paused partitions again (unassigned ones are ignored)."""
        self._set_paused(partitions, False)

    def _set_paused(self, partitions: Iterable[TopicPartition], paused: bool) -> None:
        with self._broker._lock:
            for tp in partitions:
                assigned = self._assigned.get(tp)
                if assigned is not None:
                    assigned.paused = paused
            self._broker._changed.notify_all()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Continue reading ``partition`` at ``offset``."""
        with self._broker._lock:
            self._require_assigned(partition).position = offset
            self._broker._changed.notify_all()

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer will read from ``partition``."""
        with self._broker._lock:
            return self._require_assigned(partition).position

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing was committed)."""
        if self._group_id is None:
            raise ConfigurationError("committed() needs a consumer created with a group_id")
        with self._broker._lock:
            committed = self._broker._group(self._group_id).committed
            return {tp: committed.get(tp) for tp in partitions}

    def committed_metadata(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, str]:
        """The metadata committed with the group's offsets ("" where none was)."""
        if self._group_id is None:
            raise ConfigurationError("committed_metadata() needs a consumer with a group_id")
        with self._broker._lock:
            notes = self._broker._group(self._group_id).metadata
            return {tp: notes.get(tp, "") for tp in partitions}

    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        """``(low, high)``: low is always 0 (no retention), high the last stable offset."""
        broker = self._broker
        with broker._lock:
            broker._expire_transactions(time.monotonic())
            return 0, broker._log(partition.topic, partition.partition).stable_end()

    @property
    def member_id(self) -> str | None:
        """This consumer's member id in its group (None before ``subscribe``)."""
        return self._member.member_id if self._member is not None else None

    def group_metadata(self) -> MemoryGroupMetadata:
        """Group metadata for ``send_offsets`` (member and generation, for fencing)."""
        if self._group_id is None:
            raise ConfigurationError("group_metadata() needs a consumer created with a group_id")
        with self._broker._lock:
            member = self._member
            if member is None:
                return MemoryGroupMetadata(self._broker.name, self._group_id, None, -1)
            return MemoryGroupMetadata(
                self._broker.name, self._group_id, member.member_id, member.generation
            )

    def close(self) -> None:
        """Leave the group (``on_revoke`` gets the owned partitions first); idempotent."""
        if self._closed:
            return
        self._closed = True
        broker, group, member = self._broker, self._group, self._member
        if group is None or member is None:
            return
        with broker._lock:
            owned = sorted(member.owned)
        if owned and self._on_revoke is not None:
            self._on_revoke(owned)
        with broker._lock:
            broker._release(group, member, owned)
            del group.members[member.member_id]
            broker._rebalance(group)
            self._assigned = {}
            self._fetch_order = []

    def _require_assigned(self, tp: TopicPartition) -> _Assigned:
        assigned = self._assigned.get(tp)
        if assigned is None:
            raise TransportError(f"partition {tp} is not assigned to this consumer")
        return assigned

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the consumer is closed")


class MemoryProducer:
    """An idempotent producer of a :class:`MemoryBroker`; records are visible at once.

    As librdkafka, it refuses a record larger than its ``message.max.bytes`` (or
    the topic's ``max.message.bytes``), see :mod:`durafka.transport.limits`.
    """

    def __init__(
        self, broker: MemoryBroker, message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
    ) -> None:
        """Create a producer."""
        self._broker = broker
        self._max_size = message_max_bytes
        # A deque: produce() may run on several threads while another one polls.
        self._deliveries: deque[tuple[DeliveryCallback, MemoryRecord]] = deque()

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Append a record; ``on_delivery`` runs in the next :meth:`poll` or :meth:`flush`."""
        broker = self._broker
        with broker._lock:
            log = self._target(topic, partition, key, value, headers)
            record = log.append(key, value, True, None if headers is None else list(headers))
            log.maybe_compact()
            broker._changed.notify_all()
        if on_delivery is not None:
            self._deliveries.append((on_delivery, record))

    def _target(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> _PartitionLog:
        log = self._broker._log(topic, partition)
        if key is None and log.compact:
            raise TransportError(f"compacted topic {topic!r} only accepts records with a key")
        size = record_size(key, value, headers)
        if size > self._max_size or size > log.max_record_size:
            raise self._too_large(topic, partition, size)
        return log

    def _too_large(self, topic: str, partition: int, size: int) -> DurafkaError:
        return TransportError(
            f"produce to {topic}[{partition}] failed: the record's {size} bytes exceed the "
            f"producer's message.max.bytes ({self._max_size}) or the topic's "
            "max.message.bytes [MSG_SIZE_TOO_LARGE]"
        )

    def poll(self, timeout: float = 0.0) -> None:
        """Run the pending delivery callbacks."""
        self._deliver()

    def flush(self, timeout: float = 30.0) -> int:
        """Run the pending delivery callbacks; nothing is ever left pending (returns 0)."""
        self._deliver()
        return 0

    def close(self) -> None:
        """Run the pending delivery callbacks."""
        self._deliver()

    def _deliver(self) -> None:
        deliveries = self._deliveries
        while deliveries:
            try:
                callback, record = deliveries.popleft()
            except IndexError:  # another thread took the last one
                return
            callback(None, record)


class MemoryTransactionalProducer(MemoryProducer):
    """A transactional producer of a :class:`MemoryBroker` (see the module docstring)."""

    def __init__(
        self,
        broker: MemoryBroker,
        transactional_id: str,
        transaction_timeout_ms: int = _DEFAULT_TRANSACTION_TIMEOUT_MS,
        message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
    ) -> None:
        """Create a producer; call :meth:`init_transactions` before anything else."""
        super().__init__(broker, message_max_bytes)
        self._tid = transactional_id
        self._timeout_s = transaction_timeout_ms / 1000
        self._epoch: int | None = None
        self._txn: _Txn | None = None

    def init_transactions(self, timeout: float = 30.0) -> None:
        """Register this producer, fencing (and aborting) any older one with its id."""
        broker = self._broker
        with broker._lock:
            older = broker._open_txns.get(self._tid)
            if older is not None:
                broker._end_transaction(older, commit=False)
                older.abort_reason = "a newer producer with the same transactional.id took over"
            self._epoch = broker._epochs[self._tid] = broker._epochs.get(self._tid, -1) + 1
            self._txn = None

    def begin_transaction(self) -> None:
        """Start a transaction."""
        broker = self._broker
        with broker._lock:
            self._check_epoch()
            if self._txn is not None:
                raise TransactionError("begin_transaction(): a transaction is already open")
            assert self._epoch is not None
            txn = _Txn(self._tid, self._epoch, time.monotonic() + self._timeout_s)
            self._txn = broker._open_txns[self._tid] = txn
            broker._next_txn_deadline = min(broker._next_txn_deadline, txn.deadline)

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Append a record inside the open transaction (invisible until commit)."""
        broker = self._broker
        with broker._lock:
            txn = self._live_txn("produce")
            log = self._target(topic, partition, key, value, headers)
            record = log.append(key, value, False, None if headers is None else list(headers))
            if txn not in log.open_txns:
                log.open_txns[txn] = record._offset
                txn.logs.append(log)
            txn.records.append(record)
        if on_delivery is not None:
            self._deliveries.append((on_delivery, record))

    def send_offsets(
        self,
        offsets: Mapping[TopicPartition, int],
        group_metadata: Any,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit these consumer offsets (and their metadata) together with the transaction."""
        broker = self._broker
        with broker._lock:
            txn = self._live_txn("send_offsets")
            group_id = broker._check_group_metadata(group_metadata)
            txn.offsets.setdefault(group_id, {}).update(offsets)
            notes = txn.metadata.setdefault(group_id, {})
            for tp in offsets:
                if metadata is not None and tp in metadata:
                    notes[tp] = metadata[tp]
                else:
                    notes.pop(tp, None)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Make the records and offsets of the transaction visible, atomically."""
        broker = self._broker
        with broker._lock:
            txn = self._live_txn("commit_transaction")
            broker._end_transaction(txn, commit=True)
            self._txn = None
        self._deliver()

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Drop the records and offsets of the open transaction (no-op without one)."""
        broker = self._broker
        with broker._lock:
            broker._expire_transactions(time.monotonic())
            self._check_epoch()
            txn, self._txn = self._txn, None
            if txn is not None and txn.abort_reason is None:
                broker._end_transaction(txn, commit=False)
        self._deliver()

    def abandon(self) -> None:
        """Drop this producer without ending its transaction (the next init aborts it)."""
        self._txn = None
        self._epoch = None

    def close(self) -> None:
        """Abort an open transaction (so readers are not held back) and deliver."""
        broker = self._broker
        with broker._lock:
            txn, self._txn = self._txn, None
            if txn is not None and txn.abort_reason is None and self._is_current():
                broker._end_transaction(txn, commit=False)
        self._deliver()

    def _too_large(self, topic: str, partition: int, size: int) -> DurafkaError:
        # As on Kafka: abortable, the transaction goes on only after an abort.
        return RecordRejectedError(
            f"{super()._too_large(topic, partition, size)}; abort the transaction",
            topic=topic,
            partition=partition,
            code="MSG_SIZE_TOO_LARGE",
        )

    def _is_current(self) -> bool:
        return self._epoch is not None and self._broker._epochs.get(self._tid) == self._epoch

    def _check_epoch(self) -> None:
        if self._epoch is None:
            raise TransactionError("call init_transactions() before any transactional call")
        if not self._is_current():
            txn = self._txn
            why = (
                txn.abort_reason
                if txn is not None and txn.abort_reason is not None
                else "a newer instance took over"
            )
            raise TransactionError(
                f"producer with transactional.id {self._tid!r} was fenced ({why}); "
                "close it and create a new one",
                fatal=True,
            )

    def _live_txn(self, operation: str) -> _Txn:
        # Expired first: a transaction past its timeout fences its producer.
        self._broker._expire_transactions(time.monotonic())
        self._check_epoch()
        txn = self._txn
        if txn is None:
            raise TransactionError(f"{operation}(): no open transaction (begin_transaction first)")
        return txn


class MemoryTransport:
    """The :class:`~durafka.transport.base.Transport` of a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        """Bind to ``broker`` (the process's default ``memory://`` broker if None)."""
        self.broker = broker if broker is not None else MemoryBroker.get()
        self.bootstrap = self.broker.url

    def consumer(self, group_id: str | None = None, **config: Any) -> MemoryConsumer:
        """A read_committed consumer; Kafka client settings in ``config`` are ignored."""
        return MemoryConsumer(self.broker, group_id)

    def producer(self, **config: Any) -> MemoryProducer:
        """A producer; of the Kafka client settings only ``message.max.bytes`` counts."""
        return MemoryProducer(self.broker, _message_max_bytes(config))

    def transactional_producer(
        self, transactional_id: str, **config: Any
    ) -> MemoryTransactionalProducer:
        """A transactional producer (``transaction.timeout.ms``, ``message.max.bytes`` count)."""
        timeout_ms = int(config.get("transaction.timeout.ms", _DEFAULT_TRANSACTION_TIMEOUT_MS))
        return MemoryTransactionalProducer(
            self.broker, transactional_id, timeout_ms, _message_max_bytes(config)
        )

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics; raise ``TopologyMismatchError`` if an existing one differs."""
        broker = self.broker
        with broker._lock:
            broker._ensure_topics(specs)

    def describe_topics(self, specs: Sequence[TopicSpec]) -> dict[str, TopicSpec]:
        """The existing topics of ``specs`` as this broker holds them (see the contract)."""
        with self.broker._lock:
            found = {s.name: self.broker._topics.get(s.name) for s in specs}
        return {
            spec.name: TopicSpec(
                spec.name,
                topic.spec.partitions,
                topic.spec.replication_factor,
                {k: v for k, v in topic.spec.config.items() if k in spec.config},
            )
            for spec in specs
            if (topic := found[spec.name]) is not None
        }

    def partition_count(self, topic: str) -> int:
        """The number of partitions of ``topic``."""
        with self.broker._lock:
            return len(self.broker._topic(topic).logs)

    def group_assignments(self, group_id: str) -> dict[str, list[TopicPartition]]:
        """The members of consumer group ``group_id`` and the partitions each owns."""
        with self.broker._lock:
            group = self.broker._groups.get(group_id)
            if group is None:
                return {}
            return {m.member_id: sorted(m.owned) for m in group.members.values()}

    def close(self) -> None:
        """Nothing to release: the broker outlives its transports."""
