"""Partitions of a task hub: who owns each input partition, how far behind it is, how fast it moves.

Everything comes from Kafka, so it works from any machine with access to the
cluster, without asking the processors:

* owners: the members of the consumer groups ``H.processors`` (input
  ``H.orchestrations``) and ``H.workers`` (``H.activities``), from
  :meth:`~durafka.transport.base.Transport.group_assignments`;
* lag: the group's committed offset against the partition's end offset (every
  processor and worker transaction commits its input offsets, so the committed
  offset is what has been applied, exactly once);
* state: whether input waits and whether the committed offset moved since the
  previous sample. A partition's owner restores its state from the changelog
  before it processes anything, so an owned partition with input waiting whose
  offset stands still is ``stalled``: restoring, or stuck (the processor warns
  about the stuck case in its log);
* throughput: records committed per second between samples; a
  :class:`ClusterMonitor` keeps the last samples (the dashboard's chart).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from durafka.management.models import ClusterInfo, PartitionInfo, iso
from durafka.topology import HubTopics
from durafka.transport.base import Consumer, TopicPartition, Transport

__all__ = ["ClusterMonitor", "OffsetSample", "ThroughputPoint", "partition_offsets"]


def partition_offsets(
    consumer: Consumer, partitions: list[TopicPartition]
) -> tuple[dict[TopicPartition, int | None], dict[TopicPartition, int]]:
    """The group's committed offset and the end offset of each of ``partitions``.

    ``consumer`` belongs to the group whose offsets are read; it need not be
    subscribed. The lag of a partition is ``end - committed`` (nothing committed: 0).

    Raises:
        TransportError: a topic is missing or the broker failed.
    """
    committed = consumer.committed(partitions)
    end = {tp: consumer.watermarks(tp)[1] for tp in partitions}
    return committed, end


@dataclass(frozen=True, slots=True)
class OffsetSample:
    """The offsets of the input topics at one moment.

    Attributes:
        at: when (seconds since the epoch).
        committed: each partition's committed offset in its group (None: nothing yet).
        end: each partition's end offset (after the last stable record).
        owners: the member that owns each partition (missing: nobody).
    """

    at: float
    committed: dict[TopicPartition, int | None]
    end: dict[TopicPartition, int]
    owners: dict[TopicPartition, str]


class ThroughputPoint(BaseModel):
    """Records per second between two samples, per input topic.

    Attributes:
        at_ms: the end of the interval, ms since the epoch.
        orchestrations_in: records written to ``H.orchestrations`` per second.
        orchestrations_done: records processors committed per second.
        activities_done: activity tasks workers committed per second.
    """

    at_ms: int
    orchestrations_in: float
    orchestrations_done: float
    activities_done: float


class ClusterMonitor:
    """Samples a task hub's input offsets and group members; keeps the recent samples.

    Thread-safe. Holds two consumers (one per group, never subscribed: they read
    committed offsets and end offsets only); close it when done.

    Args:
        transport: the task hub's transport.
        topics: the task hub's names.
        keep: how many samples to keep (the window of :meth:`throughput`).
    """

    def __init__(self, transport: Transport, topics: HubTopics, keep: int = 120) -> None:
        self._transport = transport
        self._topics = topics
        self._lock = threading.Lock()
        self._samples: deque[OffsetSample] = deque(maxlen=keep)
        self._groups = {
            topics.orchestrations: topics.processor_group,
            topics.activities: topics.worker_group,
        }
        self._consumers: dict[str, Consumer] = {}

    def sample(self) -> OffsetSample:
        """Read the offsets and owners now, keep the sample and return it.

        Raises:
            TransportError: a topic is missing or the broker failed.
        """
        with self._lock:
            committed: dict[TopicPartition, int | None] = {}
            end: dict[TopicPartition, int] = {}
            owners: dict[TopicPartition, str] = {}
            for topic, group in self._groups.items():
                consumer = self._consumers.get(topic)
                if consumer is None:
                    consumer = self._consumers[topic] = self._transport.consumer(group)
                parts = [
                    TopicPartition(topic, p) for p in range(self._transport.partition_count(topic))
                ]
                topic_committed, topic_end = partition_offsets(consumer, parts)
                committed.update(topic_committed)
                end.update(topic_end)
                for member, tps in self._transport.group_assignments(group).items():
                    for tp in tps:
                        if tp.topic == topic:
                            owners[tp] = member
            sample = OffsetSample(time.time(), committed, end, owners)
            self._samples.append(sample)
            return sample

    def info(self, *, resample: bool = True) -> ClusterInfo:
        """Owner, lag and state of every input partition (from a new sample by default)."""
        if resample or not self._samples:
            self.sample()
        with self._lock:
            current = self._samples[-1]
            previous = self._samples[-2] if len(self._samples) > 1 else None
        partitions = [
            PartitionInfo(
                topic=tp.topic,
                partition=tp.partition,
                owner=current.owners.get(tp),
                committed=current.committed.get(tp),
                end=end,
                lag=_lag(current, tp),
                state=_state(current, previous, tp),
            )
            for tp, end in sorted(current.end.items())
        ]
        members = {
            topic: sorted({m for tp, m in current.owners.items() if tp.topic == topic})
            for topic in self._groups
        }
        return ClusterInfo(
            task_hub=self._topics.hub,
            bootstrap=self._transport.bootstrap,
            sampled_at=iso(int(current.at * 1000)) or "",
            processors=members[self._topics.orchestrations],
            workers=members[self._topics.activities],
            partitions=partitions,
        )

    def throughput(self) -> list[ThroughputPoint]:
        """Records per second between consecutive kept samples, oldest first."""
        with self._lock:
            samples = list(self._samples)
        points = []
        for before, after in itertools.pairwise(samples):
            seconds = after.at - before.at
            if seconds <= 0:
                continue
            points.append(
                ThroughputPoint(
                    at_ms=int(after.at * 1000),
                    orchestrations_in=_rate(before.end, after.end, self._topics.orchestrations)
                    / seconds,
                    orchestrations_done=_rate(
                        before.committed, after.committed, self._topics.orchestrations
                    )
                    / seconds,
                    activities_done=_rate(
                        before.committed, after.committed, self._topics.activities
                    )
                    / seconds,
                )
            )
        return points

    def close(self) -> None:
        """Release the consumers."""
        with self._lock:
            consumers, self._consumers = list(self._consumers.values()), {}
        for consumer in consumers:
            consumer.close()


def _lag(sample: OffsetSample, tp: TopicPartition) -> int:
    committed = sample.committed.get(tp)
    return max(0, sample.end[tp] - (committed or 0))


def _state(
    current: OffsetSample, previous: OffsetSample | None, tp: TopicPartition
) -> Literal["idle", "unowned", "active", "stalled", "waiting"]:
    if _lag(current, tp) == 0:
        return "idle"
    if tp not in current.owners:
        return "unowned"
    if previous is None or tp not in previous.committed:
        return "waiting"
    return "active" if current.committed.get(tp) != previous.committed.get(tp) else "stalled"


def _rate(
    before: Mapping[TopicPartition, int | None],
    after: Mapping[TopicPartition, int | None],
    topic: str,
) -> float:
    # Offsets include transaction markers, so this slightly overcounts records.
    return float(
        sum(
            max(0, (after.get(tp) or 0) - (before.get(tp) or 0))
            for tp in after
            if tp.topic == topic
        )
    )
