"""Prometheus metrics of the processor and the activity worker.

**Cost on the hot path.** Each role's metrics are written by the role's own
thread only, into plain dicts and lists (:class:`Counter`, :class:`Histogram`):
no lock, no ``labels()`` lookup, one dict update per event. A scrape copies them
(a dict or list copy is atomic under the GIL) and builds the Prometheus families
then (:class:`MetricsCollector`). Values that the roles count anyway (cache
hits, dead letters, dropped completions) are read at scrape time; consumer lag
is asked from Kafka at scrape time, off the roles' threads.

**Committed work only.** What an orchestration batch did (instances started
and ended, steps, retries, entity operations, timers fired) is noted in the
share of the partition it belongs to (:func:`instance_started` and the other
module functions append to ``PartitionBatch.tally``) and counted only when that
share's transaction commits (:meth:`ProcessorMetrics.checkpointed`): a batch
that is aborted and processed again counts once. Activity executions count
every execution (activities are at-least-once: a re-run is a real execution).

Label values are bounded: names that the app does not register (e.g. in a
record of another service) are counted as ``<unregistered>``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as Counts
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from durafka.observability.health import Progress
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import TIMER_PREFIX
from durafka.transport.base import Consumer, TopicPartition, Transport
from durafka.transport.client_config import for_client

if TYPE_CHECKING:
    from durafka.deadletters import DeadLetters
    from durafka.processor.instances import InstanceCache
    from durafka.registry import Registry

__all__ = [
    "UNREGISTERED",
    "Counter",
    "Histogram",
    "MetricsCollector",
    "ProcessorMetrics",
    "RoleMetrics",
    "Tallied",
    "TallyItem",
    "WorkerMetrics",
    "entity_operation",
    "instance_ended",
    "instance_started",
    "retried",
    "step_taken",
    "timer_fired",
]

log = logging.getLogger("durafka.metrics")

#: The label value of a name the app does not register.
UNREGISTERED: Final = "<unregistered>"
#: How long a scrape waits for a role's loop to tell its consumer positions.
POSITION_WAIT_S: Final = 1.0
#: How often the processor counts its stored timers at most (only while scraped).
TIMER_COUNT_INTERVAL_S: Final = 10.0

Labels = tuple[str, ...]
#: What a batch's share notes for the metrics: (kind, labels, value).
TallyItem = tuple[int, Labels, float]

# Seconds: from a fast orchestrator step to a slow activity.
_FAST_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Seconds: activities, commits, restores.
_SLOW_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
# Seconds: an orchestration's life, from its start to its end.
_LIFE_BUCKETS: Final = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
    86400.0, 604800.0,
)  # fmt: skip
# Records per batch or transaction.
_SIZE_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Counter:
    """A counter with labels, written by one thread without a lock.

    Args:
        name: the metric name without ``_total``.
        doc: its help text.
        labelnames: the label names; :meth:`inc` takes their values in this order.
    """

    __slots__ = ("doc", "labelnames", "name", "values")

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        """Add ``amount`` to the series of ``labels``."""
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def value(self, labels: Labels = ()) -> float:
        """The current value of one series (0 if it never counted)."""
        return self.values.get(labels, 0.0)


class Histogram:
    """A histogram with labels, written by one thread without a lock.

    A series is one list: the count of each bucket (``le`` each bound, then
    ``+Inf``) and the sum last.
    """

    __slots__ = ("bounds", "doc", "labelnames", "name", "series")

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(bounds)
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        """Count one observation of ``value``."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def count(self, labels: Labels = ()) -> int:
        """How many observations one series has."""
        series = self.series.get(labels)
        return 0 if series is None else int(sum(series[:-1]))


# -- what the processor shows this module (it imports this module: no import back) ------------


class Tallied(Protocol):
    """A partition's share of a batch (``PartitionBatch``): where its tally is noted."""

    tally: list[TallyItem]


class _Checkpoint(Protocol):
    """A commit of shares (``Checkpoint``)."""

    @property
    def outcome(self) -> enum.Enum | None: ...

    @property
    def shares(self) -> Sequence[Tallied]: ...


class _Store(Protocol):
    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class _Owned(Protocol):
    """An owned partition (``OwnedPartition``)."""

    @property
    def number(self) -> int: ...

    @property
    def store(self) -> _Store: ...

    @property
    def next_timer_ms(self) -> int | None: ...

    @property
    def stopped(self) -> str | None: ...


class _Orchestrations(Protocol):
    """What ``OrchestrationProcessor`` counts."""

    replays: int
    dropped_completions: Counts[str]
    ignored_starts: int


# -- what an orchestration batch notes in its partition's share -------------------------------

_STARTED, _ENDED, _STEP, _RETRY, _ENTITY_OPERATION, _TIMER = range(6)


def instance_started(share: Tallied, orchestration: str) -> None:
    """An execution of ``orchestration`` started in ``share``'s batch."""
    share.tally.append((_STARTED, (orchestration,), 0.0))


def instance_ended(
    share: Tallied, orchestration: str, status: str, created_ms: int, now_ms: int
) -> None:
    """An execution ended (``completed``, ``failed``, ``terminated``) at ``now_ms``."""
    share.tally.append((_ENDED, (orchestration, status), max(0, now_ms - created_ms) / 1000))


def step_taken(share: Tallied, orchestration: str, seconds: float) -> None:
    """One orchestrator step took ``seconds``."""
    share.tally.append((_STEP, (orchestration,), seconds))


def retried(share: Tallied, activities: Iterable[str]) -> None:
    """A retry policy scheduled another attempt of each of ``activities``."""
    for name in activities:
        share.tally.append((_RETRY, (name,), 0.0))


def entity_operation(share: Tallied, entity: str, failed: bool) -> None:
    """An operation ran on an entity named ``entity``."""
    share.tally.append((_ENTITY_OPERATION, (entity, "failed" if failed else "ok"), 0.0))


def timer_fired(share: Tallied, due_ms: int, now_ms: int) -> None:
    """A timer due at ``due_ms`` fired at ``now_ms``."""
    share.tally.append((_TIMER, (), max(0, now_ms - due_ms) / 1000))


# -- the roles ------------------------------------------------------------------------------


class RoleMetrics:
    """What every role exposes: its series, liveness, readiness, owned partitions and lag.

    Args:
        role: ``processor`` or ``worker``.
        transport: where the lag is read (with a consumer of its own, at scrape time).
        client_config: the app's client settings (``consumer.`` ones reach that consumer).
        group: the role's consumer group.
        topic: the role's input topic.
        ready: whether the role is ready (``/readyz``); asked by the loop at the end of
            each iteration (it reads the role's state).
        position: the role's consumer's position in a partition (None: not known);
            called on the role's thread only (a Kafka consumer is not shared by threads).

    Attributes:
        progress: beaten by the role's loop (``/healthz``).
    """

    def __init__(
        self,
        role: str,
        transport: Transport,
        client_config: Mapping[str, str],
        group: str,
        topic: str,
        ready: Callable[[], bool],
        position: Callable[[TopicPartition], int | None],
    ) -> None:
        self.role = role
        self._ready = ready
        # Decided by the loop at the end of an iteration: a consistent view of its state
        # (a partition is briefly neither restoring nor owned within an iteration).
        self._is_ready = False
        self.progress = Progress()
        self._transport = transport
        self._client_config = dict(client_config)
        self._group = group
        self._topic = topic
        self._position = position
        # A scrape asks the loop for its positions (only the loop may use its consumer).
        self._positions_request: threading.Event | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._lag_consumer: Consumer | None = None
        self._lock = threading.Lock()
        self.transactions = Counter(
            "durafka_transactions",
            "Kafka transactions of a role by outcome (committed, aborted, fenced, unknown).",
            ("role", "outcome"),
        )
        self.commit_seconds = Histogram(
            "durafka_commit_seconds",
            "Time to commit one transaction (produce, flush, offsets, commit).",
            ("role",),
            _SLOW_BUCKETS,
        )
        self.activity_executions = Counter(
            "durafka_activity_executions",
            "Activity executions by activity (every execution, also a re-run).",
            ("activity",),
        )
        self.activity_failures = Counter(
            "durafka_activity_failures",
            "Activity executions that failed (the TASK_FAILED results), by activity.",
            ("activity",),
        )
        self.activity_seconds = Histogram(
            "durafka_activity_duration_seconds",
            "Activity execution time by activity, from its start to its result.",
            ("activity",),
            _SLOW_BUCKETS,
        )

    # -- written by the role's thread ----------------------------------------------------

    def _answer(self) -> None:
        """End of a loop iteration: beat, note readiness, give a waiting scrape the positions."""
        self.progress.beat()
        self._is_ready = self._ready()
        request = self._positions_request
        if request is None:
            return
        self._positions_request = None
        positions: dict[TopicPartition, int] = {}
        for p in self.owned_partitions():
            tp = TopicPartition(self._topic, p)
            try:
                position = self._position(tp)
            except Exception:  # e.g. revoked meanwhile: the committed offset counts
                continue
            if position is not None and position >= 0:
                positions[tp] = position
        self._positions = positions
        request.set()

    def activity_done(self, name: str, event: HistoryEvent, seconds: float) -> None:
        """An activity execution ended with ``event`` (its result or failure)."""
        labels = (name,)
        self.activity_executions.inc(labels)
        if event.kind is EventKind.TASK_FAILED:
            self.activity_failures.inc(labels)
        self.activity_seconds.observe(labels, seconds)

    # -- read by scrapes -----------------------------------------------------------------

    def is_ready(self) -> bool:
        """``/readyz``: the role was ready at the end of its last loop iteration."""
        return self._is_ready

    def owned_partitions(self) -> list[int]:
        """The partitions of the input topic the role owns now."""
        raise NotImplementedError

    def stopped_partitions(self) -> list[int]:
        """The owned partitions the role stopped consuming (a newer release's record)."""
        return []

    def series(self) -> list[Counter | Histogram]:
        """Every series the role writes."""
        return [
            self.transactions,
            self.commit_seconds,
            self.activity_executions,
            self.activity_failures,
            self.activity_seconds,
        ]

    def families(self) -> Iterator[Metric]:
        """The role's gauges and the counters it keeps elsewhere, read now."""
        owned = self.owned_partitions()
        yield _gauge(
            "durafka_owned_partitions",
            "Input partitions this process owns, by topic.",
            ("role", "topic"),
            {(self.role, self._topic): len(owned)},
        )
        yield _gauge(
            "durafka_last_progress_seconds",
            "Seconds since the role's loop last made progress (see /healthz).",
            ("role",),
            {(self.role,): self.progress.age()},
        )
        # Always there (0 when none), so that an alert can wait for it to rise.
        yield _gauge(
            "durafka_partitions_stopped",
            "Owned input partitions the role stopped consuming at a record (or stored value) "
            "written by a newer durafka release: upgrade this process (the log names them).",
            ("role", "topic"),
            {(self.role, self._topic): len(self.stopped_partitions())},
        )
        lag = self._lag(owned)
        if lag is not None:
            yield _gauge(
                "durafka_consumer_lag",
                "Records of an owned input partition this role has not consumed yet: its last "
                "stable offset minus the role's position (Kafka's records-lag), read at scrape "
                "time.",
                ("topic", "partition"),
                {(self._topic, str(p)): n for p, n in lag.items()},
            )

    def _lag(self, owned: list[int]) -> dict[int, int] | None:
        """End offset minus the role's position in each owned partition (None: Kafka failed).

        The position, not the committed offset: a transaction's commit marker takes
        an offset after its last record, so the offset a reader commits after that
        record stays one short of the end for good (the position moves past it).
        The end offsets are read first, then the loop is asked for its positions
        (taken after: the lag is never overstated); a loop that does not answer
        within :data:`POSITION_WAIT_S` (stuck, see ``/healthz``) leaves the group's
        committed offsets to count.
        """
        if not owned:
            return {}
        from durafka.management.cluster import partition_offsets

        tps = [TopicPartition(self._topic, p) for p in owned]
        try:
            with self._lock:
                if self._lag_consumer is None:
                    self._lag_consumer = self._transport.consumer(
                        self._group, **for_client(self._client_config, "consumer")
                    )
                committed, end = partition_offsets(self._lag_consumer, tps)
                request = threading.Event()
                self._positions_request = request
                positions = self._positions if request.wait(POSITION_WAIT_S) else {}
        except Exception as exc:  # a scrape must answer even when Kafka does not
            log.debug("reading the lag of %s failed: %s", self._topic, exc)
            return None
        lag: dict[int, int] = {}
        for tp in tps:
            position = positions.get(tp)
            if position is None:
                position = committed.get(tp) or 0
            lag[tp.partition] = max(0, end[tp] - position)
        return lag

    def close(self) -> None:
        """Release the consumer that reads the lag."""
        with self._lock:
            consumer, self._lag_consumer = self._lag_consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.debug("closing the lag consumer failed", exc_info=True)


class ProcessorMetrics(RoleMetrics):
    """The metrics of one :class:`~durafka.processor.Processor`.

    Args:
        registry: the app's functions (names it does not know become ``<unregistered>``).
        transport: the processor's transport (for the lag).
        client_config: the app's client settings.
        group: ``H.processors``.
        topic: ``H.orchestrations``.
        owned: the processor's owned partitions (read, never changed).
        ready: whether the processor is ready (``/readyz``).
        position: the processor's consumer position in a partition.
        cache: the instance cache (hits, misses, evictions).
        orchestrations: replays, dropped completions, ignored starts.
        dead_letters: the processor's dead letters.
        restoring: the partitions being restored now.
    """

    def __init__(
        self,
        registry: Registry,
        transport: Transport,
        client_config: Mapping[str, str],
        *,
        group: str,
        topic: str,
        owned: Mapping[int, _Owned],
        ready: Callable[[], bool],
        position: Callable[[TopicPartition], int | None],
        cache: InstanceCache,
        orchestrations: _Orchestrations,
        dead_letters: DeadLetters,
        restoring: Callable[[], Iterable[int]],
    ) -> None:
        super().__init__("processor", transport, client_config, group, topic, ready, position)
        self._registry = registry
        self._owned = owned
        self._cache = cache
        self._orchestrations = orchestrations
        self._dead_letters = dead_letters
        self._restoring_now = restoring
        self.started = Counter(
            "durafka_orchestrations_started",
            "Orchestration executions started, by orchestration.",
            ("orchestration",),
        )
        self.ended = Counter(
            "durafka_orchestrations_ended",
            "Orchestration executions ended, by orchestration and status "
            "(completed, failed, terminated).",
            ("orchestration", "status"),
        )
        self.life_seconds = Histogram(
            "durafka_orchestration_duration_seconds",
            "End-to-end time of orchestration executions (created to ended), by orchestration "
            "and status.",
            ("orchestration", "status"),
            _LIFE_BUCKETS,
        )
        self.step_seconds = Histogram(
            "durafka_orchestration_step_seconds",
            "Time of one orchestrator step (the code between two awaits), by orchestration.",
            ("orchestration",),
            _FAST_BUCKETS,
        )
        self.retries = Counter(
            "durafka_activity_retries",
            "Attempts of activities scheduled again by a retry policy, by activity.",
            ("activity",),
        )
        self.entity_operations = Counter(
            "durafka_entity_operations",
            "Entity operations run, by entity and outcome (ok, failed).",
            ("entity", "outcome"),
        )
        self.timers_fired = Counter("durafka_timers_fired", "Durable timers fired.")
        self.timer_delay = Histogram(
            "durafka_timer_delay_seconds",
            "How late durable timers fired (fired - due).",
            (),
            _SLOW_BUCKETS,
        )
        self.batch_records = Histogram(
            "durafka_batch_records",
            "Records consumed per processor batch (batches that consumed any).",
            (),
            _SIZE_BUCKETS,
        )
        self.restores = Counter("durafka_restores", "Partition stores restored from the changelog.")
        self.restore_records = Counter(
            "durafka_restore_records", "Changelog records applied by restores."
        )
        self.restore_seconds = Histogram(
            "durafka_restore_duration_seconds",
            "Time to restore one partition store from the changelog.",
            (),
            _SLOW_BUCKETS,
        )
        # Offsets still to restore, per partition being restored (written by the loop).
        self._restoring: dict[int, int] = {}
        # Stored timers per partition, counted by the loop when a scrape asked (see
        # count_timers): counting needs the stores, which only the loop may touch.
        self._timers: dict[int, int] = {}
        self._timers_wanted = False
        self._timers_counted_at = -TIMER_COUNT_INTERVAL_S
        self._by_kind: dict[int, tuple[Counter | Histogram, Collection[str] | None]] = {
            _STARTED: (self.started, registry.orchestrations),
            _ENDED: (self.ended, registry.orchestrations),
            _STEP: (self.step_seconds, registry.orchestrations),
            _RETRY: (self.retries, registry.activities),
            _ENTITY_OPERATION: (self.entity_operations, registry.entities),
        }

    # -- written by the processor's thread --------------------------------------------------

    def iteration(self, records: int) -> None:
        """One loop iteration ended, having consumed ``records``."""
        self._answer()
        if records:
            self.batch_records.observe((), records)
        if self._timers_wanted:
            self._count_timers()

    def checkpointed(self, checkpoint: _Checkpoint, seconds: float) -> None:
        """A checkpoint's commit took ``seconds``; its shares' tallies count if it committed."""
        outcome = checkpoint.outcome
        self.transactions.inc(("processor", outcome.value if outcome is not None else "failed"))
        self.commit_seconds.observe(("processor",), seconds)
        if outcome is None or outcome.value != "committed":
            return
        by_kind = self._by_kind
        for share in checkpoint.shares:
            for kind, labels, value in share.tally:
                if kind == _TIMER:
                    self.timers_fired.inc()
                    self.timer_delay.observe((), value)
                    continue
                metric, known = by_kind[kind]
                if known is not None and labels[0] not in known:
                    labels = (UNREGISTERED, *labels[1:])
                if kind == _ENDED:
                    self.ended.inc(labels)
                    self.life_seconds.observe(labels, value)
                elif isinstance(metric, Counter):
                    metric.inc(labels)
                else:
                    metric.observe(labels, value)

    def restore_progress(self, partition: int, done: int, total: int) -> None:
        """Restoring ``partition``: ``done`` of ``total`` offsets (a beat of the loop too)."""
        self.progress.beat()
        self._restoring[partition] = total - done

    def restored(self, partition: int, records: int, seconds: float) -> None:
        """``partition`` was restored: ``records`` applied in ``seconds``."""
        self.progress.beat()
        self._restoring.pop(partition, None)
        self.restores.inc()
        self.restore_records.inc((), records)
        self.restore_seconds.observe((), seconds)

    def _count_timers(self) -> None:
        """Count the stored timers of each owned partition (a scrape asked since the last count).

        A scan of the timer keys, in the loop (only it may touch the stores), at
        most every :data:`TIMER_COUNT_INTERVAL_S` and only while something scrapes.
        """
        now = time.monotonic()
        if now - self._timers_counted_at < TIMER_COUNT_INTERVAL_S:
            return
        self._timers_wanted = False
        self._timers_counted_at = now
        self._timers = {
            p: sum(1 for _ in part.store.iter_prefix(TIMER_PREFIX))
            for p, part in self._owned.items()
        }

    # -- read by scrapes ----------------------------------------------------------------

    def owned_partitions(self) -> list[int]:
        """The partitions of ``H.orchestrations`` the processor owns."""
        return sorted(self._owned)

    def stopped_partitions(self) -> list[int]:
        """The owned partitions stopped at a newer release's record or stored value."""
        return sorted(p for p, part in list(self._owned.items()) if part.stopped is not None)

    def series(self) -> list[Counter | Histogram]:
        """Every series the processor writes."""
        return [
            *super().series(),
            self.started,
            self.ended,
            self.life_seconds,
            self.step_seconds,
            self.retries,
            self.entity_operations,
            self.timers_fired,
            self.timer_delay,
            self.batch_records,
            self.restores,
            self.restore_records,
            self.restore_seconds,
        ]

    def families(self) -> Iterator[Metric]:
        """Gauges, and the counters the cache, the orchestrations and dead letters keep."""
        yield from super().families()
        cache, orch = self._cache, self._orchestrations
        yield CounterMetricFamily(
            "durafka_cache_hits", "Instance cache hits (loaded, no replay).", cache.hits
        )
        yield CounterMetricFamily(
            "durafka_cache_misses", "Instance cache misses (read from the store).", cache.misses
        )
        yield CounterMetricFamily(
            "durafka_cache_evictions", "Instances evicted from the cache.", cache.evictions
        )
        yield CounterMetricFamily(
            "durafka_cache_replays",
            "Executors rebuilt by replaying a history (after a miss or a failed batch).",
            orch.replays,
        )
        yield GaugeMetricFamily("durafka_cache_instances", "Instances in the cache.", len(cache))
        yield _counter(
            "durafka_completions_dropped",
            "Completions dropped before the engine saw them, by reason.",
            ("reason",),
            {(reason,): n for reason, n in list(orch.dropped_completions.items())},
        )
        yield CounterMetricFamily(
            "durafka_starts_ignored",
            "Starts ignored: the id was running, or its finished execution was kept.",
            orch.ignored_starts,
        )
        yield _dead_letters(self._dead_letters)
        yield _gauge(
            "durafka_restore_remaining_offsets",
            "Changelog offsets still to restore, per partition being restored.",
            ("partition",),
            {
                (str(p),): n
                for p, n in list(self._restoring.items())
                if p in set(self._restoring_now())
            },
        )
        now_ms = time.time() * 1000
        parts = list(self._owned.values())
        yield _gauge(
            "durafka_timers_overdue_seconds",
            "How long the earliest due timer of an owned partition has waited to fire.",
            ("partition",),
            {
                (str(part.number),): max(0.0, (now_ms - part.next_timer_ms) / 1000)
                if part.next_timer_ms is not None
                else 0.0
                for part in parts
            },
        )
        # Counted by the loop on request: this scrape shows the previous count.
        self._timers_wanted = True
        yield _gauge(
            "durafka_timers_pending",
            "Durable timers stored per owned partition (counted by the loop at most every "
            f"{TIMER_COUNT_INTERVAL_S:g} s while scraped: a scrape shows the previous count).",
            ("partition",),
            {(str(p),): n for p, n in list(self._timers.items()) if p in self._owned},
        )


class WorkerMetrics(RoleMetrics):
    """The metrics of one :class:`~durafka.activities.worker.ActivityWorker`.

    Args:
        transport: the worker's transport (for the lag).
        client_config: the app's client settings.
        group: ``H.workers``.
        topic: ``H.activities``.
        owned: the worker's owned partitions (read, never changed).
        ready: whether the worker is subscribed and polling.
        position: the worker's consumer position in a partition (None: not subscribed).
        running: how many activities run now.
        dead_letters: the worker's dead letters (None before it started).
        blocked: the partitions it stopped at a newer release's task (read, never changed).
    """

    def __init__(
        self,
        transport: Transport,
        client_config: Mapping[str, str],
        *,
        group: str,
        topic: str,
        owned: Collection[TopicPartition],
        ready: Callable[[], bool],
        position: Callable[[TopicPartition], int | None],
        running: Callable[[], int],
        dead_letters: Callable[[], DeadLetters | None],
        blocked: Collection[TopicPartition] = (),
    ) -> None:
        super().__init__("worker", transport, client_config, group, topic, ready, position)
        self._owned = owned
        self._blocked = blocked
        self._running = running
        self._dead_letters = dead_letters
        self.transaction_records = Histogram(
            "durafka_worker_transaction_records",
            "Records (results, dead letters) produced per worker transaction.",
            (),
            _SIZE_BUCKETS,
        )

    def iteration(self) -> None:
        """One loop iteration of the worker ended."""
        self._answer()

    def committed(self, records: int, seconds: float, outcome: str) -> None:
        """A worker transaction of ``records`` ended with ``outcome`` after ``seconds``."""
        self.transactions.inc(("worker", outcome))
        self.commit_seconds.observe(("worker",), seconds)
        self.transaction_records.observe((), records)

    def owned_partitions(self) -> list[int]:
        """The partitions of ``H.activities`` the worker owns."""
        return sorted(tp.partition for tp in list(self._owned))

    def stopped_partitions(self) -> list[int]:
        """The owned partitions stopped at a task of a newer release."""
        return sorted(tp.partition for tp in list(self._blocked))

    def series(self) -> list[Counter | Histogram]:
        """Every series the worker writes."""
        return [*super().series(), self.transaction_records]

    def families(self) -> Iterator[Metric]:
        """Gauges and the worker's dead letters."""
        yield from super().families()
        yield GaugeMetricFamily(
            "durafka_activities_running", "Activities running in the worker.", self._running()
        )
        dead_letters = self._dead_letters()
        if dead_letters is not None:
            yield _dead_letters(dead_letters)


# -- exposition -------------------------------------------------------------------------------


class MetricsCollector(Collector):
    """Every role of one process as one set of Prometheus families.

    Series of the same name from several roles (a processor's local activities and
    the worker's, both ``durafka_activity_executions``) are added together by labels.

    Args:
        roles: the roles' metrics; read at each scrape.
    """

    def __init__(self, roles: Callable[[], Sequence[RoleMetrics]]) -> None:
        self._roles = roles
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """The families of every role (called by ``prometheus_client`` at each scrape)."""
        with self._lock:  # concurrent scrapes share the roles' lag consumers
            roles = list(self._roles())
            merged: dict[str, list[Counter | Histogram]] = {}
            for role in roles:
                for series in role.series():
                    merged.setdefault(series.name, []).append(series)
            for same in merged.values():
                yield _family(same)
            extra: dict[str, Metric] = {}
            for role in roles:
                for family in role.families():
                    known = extra.get(family.name)
                    if known is None:
                        extra[family.name] = family
                    else:
                        known.samples.extend(family.samples)
            yield from _summed(extra.values())


def _family(same: list[Counter | Histogram]) -> Metric:
    first = same[0]
    if isinstance(first, Counter):
        values: dict[Labels, float] = {}
        for counter in same:
            assert isinstance(counter, Counter)
            for labels, v in list(counter.values.items()):
                values[labels] = values.get(labels, 0.0) + v
        return _counter(first.name, first.doc, first.labelnames, values)
    series: dict[Labels, list[float]] = {}
    for hist in same:
        assert isinstance(hist, Histogram)
        for labels, counts in list(hist.series.items()):
            counts = list(counts)
            total = series.get(labels)
            if total is not None:
                counts = [a + b for a, b in zip(total, counts, strict=True)]
            series[labels] = counts
    family = HistogramMetricFamily(first.name, first.doc, labels=first.labelnames)
    bounds = [*(_le(b) for b in first.bounds), "+Inf"]
    for labels, counts in series.items():
        cumulative = 0.0
        buckets = []
        for le, n in zip(bounds, counts[:-1], strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        family.add_metric(list(labels), buckets, counts[-1])
    return family


def _summed(families: Iterable[Metric]) -> Iterator[Metric]:
    """Families whose samples with equal name and labels are added together."""
    for family in families:
        totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            totals[key] = totals.get(key, 0.0) + s.value
        if len(totals) != len(family.samples):
            first = {(s.name, tuple(sorted(s.labels.items()))): s for s in family.samples}
            family.samples = [first[k]._replace(value=v) for k, v in totals.items()]
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))


def _counter(
    name: str, doc: str, labelnames: Sequence[str], values: Mapping[Labels, float]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labelnames)
    for labels, v in values.items():
        family.add_metric(list(labels), v)
    return family


def _gauge(
    name: str, doc: str, labelnames: Sequence[str], values: Mapping[Labels, float]
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labelnames)
    for labels, v in values.items():
        family.add_metric(list(labels), v)
    return family


def _dead_letters(dead_letters: DeadLetters) -> Metric:
    return _counter(
        "durafka_dead_letters",
        "Dead letters built, by source topic and reason (a batch that rolls back builds "
        "its dead letters again).",
        ("topic", "reason"),
        dict(list(dead_letters.by_reason.items())),
    )
