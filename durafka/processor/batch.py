"""What one processor iteration works on: its owned partitions, its batch, its outbox.

A :class:`Batch` collects everything an iteration produces until its
transactions commit, split by input partition (:class:`PartitionBatch`): each
partition's records, store writes and offsets commit together, in the
transaction of the producer that owns the partition. :class:`Outbox`
addresses the records that go to other instances (``H.orchestrations``) and to
workers (``H.activities``).

Every output record is emitted with its :data:`Source`: whose processing made
it. When Kafka refuses a record for good (too large, invalid), the loop uses it
to give that instance, entity or input record a visible outcome on the retried
batch instead of retrying the batch forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from durafka.activities.local import LocalRun
from durafka.codec.records import ActivityTask, encode_activity_task, encode_message
from durafka.processor.instances import Instance
from durafka.runtime.history import HistoryEvent
from durafka.state.base import PartitionStore
from durafka.state.keys import store_key_owner
from durafka.state.transaction import StoreTransaction
from durafka.topology import HubTopics, partition_for
from durafka.transport.base import OutgoingRecord, Record, TransactionalProducer
from durafka.transport.limits import Headers

if TYPE_CHECKING:
    from durafka.observability.metrics import TallyItem

Source: TypeAlias = str | int | bytes
"""Whose processing made an output record: an instance or entity id (``str``), the
offset of an input record (``int``: e.g. its dead letter), or a store key
(``bytes``: e.g. a malformed key's dead letter)."""


@dataclass(slots=True, eq=False)
class OwnedPartition:
    """An input partition this processor owns, from its assignment to its revocation.

    A partition revoked and assigned again is a new object: records and batch state
    taken under the old ownership compare unequal (by identity) and are dropped.

    Attributes:
        number: the partition number.
        store: its state store (restored from the changelog).
        committed_offset: the next input offset after what the last transaction
            committed (every transaction sends it, also when it consumed nothing).
        producer: the partition's own transactional producer (static ranges: one
            ``transactional.id`` per partition fences every other process that
            claims it), or None when the processor's producer commits it.
        next_timer_ms: the due time of its earliest stored timer (None: none).
        ready_at: when its store was restored and processing began (wall clock).
        stopped: why the processor stopped consuming it (a record or stored value of a
            newer durafka release, see :class:`~durafka.errors.UpgradeRequiredError`);
            None while it is consumed.
    """

    number: int
    store: PartitionStore
    committed_offset: int
    producer: TransactionalProducer | None = None
    next_timer_ms: int | None = None
    ready_at: float = 0.0
    stopped: str | None = None


@dataclass(slots=True, eq=False)
class PartitionBatch:
    """One owned partition's share of a batch: its input, store writes and output.

    Attributes:
        part: the partition (and the ownership) the share was taken under.
        now_ms: the batch's time.
        tx: the partition's store transaction for this batch.
        next_offset: the input offset after the last record consumed (None: none).
        work: each instance's (or entity's) events, in partition order.
        out: records to produce in the partition's transaction (added by :meth:`emit`).
        sources: the :data:`Source` of each record of ``out``, at the same index.
        earliest_timer_ms: the earliest timer this batch stored (the loop's timer
            index learns it only once the batch committed).
        origins: the consumed record of each event in ``work`` that came from one, by
            ``id(event)`` (a dead letter or a forward carries the record as it came).
        tally: what the share did, for the metrics (:mod:`durafka.observability.metrics`:
            counted once its transaction commits).
    """

    part: OwnedPartition
    now_ms: int
    tx: StoreTransaction
    next_offset: int | None = None
    work: dict[str, list[HistoryEvent]] = field(default_factory=dict)
    out: list[OutgoingRecord] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    earliest_timer_ms: int | None = None
    tally: list[TallyItem] = field(default_factory=list)
    origins: dict[int, Record] = field(default_factory=dict)

    @property
    def number(self) -> int:
        """The partition number."""
        return self.part.number

    @property
    def offset_to_commit(self) -> int:
        """The input offset this batch commits: after what it consumed, else the last one."""
        return self.next_offset if self.next_offset is not None else self.part.committed_offset

    def emit(self, record: OutgoingRecord, source: Source) -> None:
        """Produce ``record`` in this partition's transaction, made by ``source``."""
        self.out.append(record)
        self.sources.append(source)

    def discard(self, source: Source) -> None:
        """Drop every record ``source`` emitted in this batch (it is failed instead)."""
        if source not in self.sources:
            return
        kept = [(r, s) for r, s in zip(self.out, self.sources, strict=True) if s != source]
        self.out = [r for r, _ in kept]
        self.sources = [s for _, s in kept]

    def truncate(self, length: int) -> None:
        """Drop the records emitted after the first ``length`` ones."""
        del self.out[length:]
        del self.sources[length:]

    def source_of(self, record: OutgoingRecord, changelog: str) -> Source:
        """Whose processing made ``record``, one of this share's records or changelog records.

        A changelog record belongs to the instance or entity its store key names
        (the key itself when it names none, e.g. a malformed key).
        """
        if record.topic == changelog and record.partition == self.number:
            key = record.key or b""
            owner = store_key_owner(key)
            return key if owner is None else owner
        for i, mine in enumerate(self.out):
            if mine == record:
                return self.sources[i]
        raise LookupError(f"{record.topic}[{record.partition}] key {record.key!r} is not ours")

    def add(self, instance_id: str, event: HistoryEvent, origin: Record | None = None) -> None:
        """Queue ``event`` for ``instance_id`` (``origin``: the record it was decoded from)."""
        events = self.work.get(instance_id)
        if events is None:
            self.work[instance_id] = [event]
        else:
            events.append(event)
        if origin is not None:
            self.origins[id(event)] = origin

    def origin(self, event: HistoryEvent) -> Record | None:
        """The consumed record ``event`` was decoded from (None: made by the processor)."""
        return self.origins.get(id(event))

    def timer_stored(self, due_ms: int) -> None:
        """Note a timer this batch stored (it wakes the loop once committed)."""
        if self.earliest_timer_ms is None or due_ms < self.earliest_timer_ms:
            self.earliest_timer_ms = due_ms


@dataclass(slots=True)
class Batch:
    """Everything one iteration produces, kept until its transactions commit.

    Attributes:
        now_ms: the batch's time (``ctx.now()`` of every step in it).
        partitions: each owned partition's share, created on first use.
        touched: instances changed in this batch (written at its end).
        pending_chunks: history appended per instance, written as one chunk each.
        local: activities started next to the processor, with their partition.
        instances: the instances (and entities) this batch steps.
        deferred: per partition, the offset of the first record left for a later
            batch (``max_concurrent_orchestrations`` was reached); read again from
            there once this batch committed.
    """

    now_ms: int
    partitions: dict[int, PartitionBatch] = field(default_factory=dict)
    touched: dict[str, Instance] = field(default_factory=dict)
    pending_chunks: dict[str, list[list[HistoryEvent]]] = field(default_factory=dict)
    local: list[tuple[int, LocalRun]] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)
    deferred: dict[int, int] = field(default_factory=dict)

    def of(self, part: OwnedPartition) -> PartitionBatch:
        """The share of ``part`` (opened with a fresh store transaction on first use)."""
        share = self.partitions.get(part.number)
        if share is None:
            share = PartitionBatch(part, self.now_ms, StoreTransaction(part.store))
            self.partitions[part.number] = share
        return share

    def is_empty(self) -> bool:
        """Nothing consumed, written or produced: no transaction is needed."""
        return all(
            share.next_offset is None and not share.out and share.tx.is_empty()
            for share in self.partitions.values()
        )


class Outbox:
    """Partitions and encodes a batch's records to instances and to workers.

    Args:
        topics: the task hub's topic names.
        n_orchestrations: partitions of ``H.orchestrations``.
        n_activities: partitions of ``H.activities``.
    """

    def __init__(self, topics: HubTopics, n_orchestrations: int, n_activities: int) -> None:
        self.topics = topics
        self._n_orchestrations = n_orchestrations
        self._n_activities = n_activities

    def send(self, share: PartitionBatch, target: str, event: HistoryEvent, source: str) -> None:
        """A message to instance (or entity) ``target``, on its partition, made by ``source``."""
        key = target.encode()
        share.emit(
            OutgoingRecord(
                self.topics.orchestrations,
                partition_for(key, self._n_orchestrations),
                key,
                encode_message(target, event),
            ),
            source,
        )

    def activity_task(
        self, share: PartitionBatch, task: ActivityTask, headers: Headers | None = None
    ) -> None:
        """An activity task for the workers, on the instance's partition of ``H.activities``.

        ``headers``: e.g. the trace context of the step that scheduled it.
        """
        key = task.instance_id.encode()
        share.emit(
            OutgoingRecord(
                self.topics.activities,
                partition_for(key, self._n_activities),
                key,
                encode_activity_task(task),
                headers or None,
            ),
            task.instance_id,
        )
