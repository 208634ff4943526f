"""What one processor iteration works on: its owned partitions, its batch, its outbox.

A :class:`Batch` collects everything an iteration produces until the
transaction commits; :class:`Outbox` addresses the records that go to other
instances (``H.orchestrations``) and to workers (``H.activities``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from durafka.activities.local import LocalRun
from durafka.codec.records import ActivityTask, encode_activity_task, encode_message
from durafka.processor.instances import Instance
from durafka.runtime.history import HistoryEvent
from durafka.state.base import PartitionStore
from durafka.state.transaction import StoreTransaction
from durafka.topology import HubTopics, partition_for


@dataclass(slots=True)
class OwnedPartition:
    """An owned input partition: its store and the current batch's store transaction."""

    number: int
    store: PartitionStore
    tx: StoreTransaction | None = None
    next_timer_ms: int | None = None

    def transaction(self) -> StoreTransaction:
        """The current batch's store transaction (opened on first use)."""
        if self.tx is None:
            self.tx = StoreTransaction(self.store)
        return self.tx


@dataclass(slots=True)
class Batch:
    """Everything one iteration produces, kept until the transaction commits."""

    now_ms: int
    first_offsets: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    work: dict[int, dict[str, list[HistoryEvent]]] = field(default_factory=dict)
    touched: dict[str, Instance] = field(default_factory=dict)
    out: list[tuple[str, int, bytes | None, bytes | None]] = field(default_factory=list)
    #: Activities started next to the processor, with their instance's partition.
    local: list[tuple[int, LocalRun]] = field(default_factory=list)

    def add(self, partition: int, instance_id: str, event: HistoryEvent) -> None:
        by_instance = self.work.get(partition)
        if by_instance is None:
            by_instance = self.work[partition] = {}
        events = by_instance.get(instance_id)
        if events is None:
            by_instance[instance_id] = [event]
        else:
            events.append(event)


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

    def send(self, batch: Batch, target: str, event: HistoryEvent) -> None:
        """A message to instance (or entity) ``target``, on its partition."""
        key = target.encode()
        batch.out.append(
            (
                self.topics.orchestrations,
                partition_for(key, self._n_orchestrations),
                key,
                encode_message(target, event),
            )
        )

    def activity_task(self, batch: Batch, task: ActivityTask) -> None:
        """An activity task for the workers, on the instance's partition of ``H.activities``."""
        key = task.instance_id.encode()
        batch.out.append(
            (
                self.topics.activities,
                partition_for(key, self._n_activities),
                key,
                encode_activity_task(task),
            )
        )
