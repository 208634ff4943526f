"""The processor loop: poll a batch, apply it, commit it exactly once.

Each iteration:

1. poll a batch from the assigned partitions of ``H.orchestrations`` (read_committed);
   records of a partition whose ownership changed during the poll are dropped
   (librdkafka runs rebalance callbacks inside the poll: they come again to the
   partition's owner, from the committed offset);
2. group the records by partition and instance, add the timers that came due;
3. hand each instance's events to :class:`~durafka.processor.orchestrations.OrchestrationProcessor`
   (load from cache, else store + replay; apply; one step; route the actions)
   or, for entities, to :class:`~durafka.processor.entities.EntityProcessor`;
   run the activities started next to the processor (:mod:`durafka.activities.local`);
4. commit each producer's partitions with a :class:`~durafka.processor.checkpoint.Checkpoint`
   (records, changelog, offsets in one transaction; then the stores).

**Fencing.** Whatever ranges or modes two processes were started with, at most
one can commit for a partition:

* group mode (EOS v2): one producer per process; offsets are sent with the
  consumer's group metadata, so a member that lost a partition in a rebalance
  cannot commit for it. On assignment the processor also initialises the
  partition's own ``transactional.id`` (``H.processor.p<n>``), which fences a
  static-range processor still claiming the partition;
* static ranges: one producer per partition, ``transactional.id`` =
  ``H.processor.p<n>`` (Kafka Streams' first exactly-once design, one per task),
  so an overlapping range or a group-mode processor fences it. A fenced
  partition is given up with an error naming it, and claimed again if nobody
  commits it while input waits; a static processor refuses to start while group
  members own any of its partitions. The transaction coordinator fences with the
  same error when it aborts a transaction past ``transaction_timeout_ms`` (a broker
  down that long): a fence after a transaction that old takes the partitions back
  at once.

**Partitions' state.** An assigned partition stays paused while its store is
restored from the changelog, a slice per iteration between the polls (a
:class:`~durafka.state.restore.Restorer`), so the group membership and the
other partitions never wait for it; a stale store is wiped and restored in
full. Stores of partitions no longer owned are deleted after
``state_cleanup_delay_ms`` (:class:`~durafka.state.cleanup.StoreCleaner`).

**Poison and newer releases.** What cannot be applied is dead-lettered (or, on
the wrong partition, forwarded): :mod:`durafka.processor.rejects`. A record or a
stored value written by a newer durafka release (:mod:`durafka.codec.newer`)
stops its partition alone: it is paused, nothing past the record is committed,
and it goes on once an upgraded processor takes it (see
:class:`~durafka.errors.UpgradeRequiredError`).

**Outcomes.** An aborted transaction seeks the shares back to their committed
offsets and drops their cached instances. A rejected one (a record Kafka
refuses for good) does the same after marking whose processing made the
record (:mod:`durafka.processor.poison`), so the batch processed again gives
that instance, entity or record a visible outcome instead of failing again. A
commit whose outcome stays unknown (``commit_timeout_ms``) is never treated as
aborted: the producer is recreated (``init_transactions`` completes or aborts
the pending transaction) and the partitions are restored from the changelog and
read again from the committed offsets ("closed dirty").
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from durafka.activities.local import LocalActivities
from durafka.codec.newer import written_by_newer_release
from durafka.codec.records import decode_message
from durafka.deadletters import DeadLetters
from durafka.entities import is_entity_id
from durafka.errors import (
    DecodeError,
    DurafkaError,
    FailureDetails,
    InvalidInstanceIdError,
    MalformedKeyError,
    PartitionOwnershipError,
    ProducerGivenUpError,
    TransactionError,
    TransportError,
    UnknownSchemaError,
    UpgradeRequiredError,
)
from durafka.ids import ENTITY_ID_PREFIX, check_instance_id
from durafka.observability import metrics
from durafka.observability.metrics import ProcessorMetrics
from durafka.observability.tracing import Tracing
from durafka.processor.batch import Batch, Outbox, OwnedPartition, PartitionBatch
from durafka.processor.checkpoint import Checkpoint, CheckpointOutcome, Rejection
from durafka.processor.entities import EntityProcessor
from durafka.processor.heartbeats import HEARTBEAT_TIMER_MARK, Heartbeats
from durafka.processor.instances import InstanceCache
from durafka.processor.malformed import MalformedKeys, first_due
from durafka.processor.orchestrations import TOO_LARGE, OrchestrationProcessor
from durafka.processor.poison import PoisonSources
from durafka.processor.rejects import Rejects
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.settings import Settings
from durafka.state.base import PartitionStore, StoreFactory
from durafka.state.cleanup import StoreCleaner
from durafka.state.keys import (
    INPUT_OFFSET_KEY,
    TIMER_END,
    TIMER_PREFIX,
    decode_input_offset,
    parse_timer_key,
    timer_upper_bound,
)
from durafka.state.restore import Restored, Restorer, TombstoneRetention
from durafka.topology import HubTopics
from durafka.transport.base import (
    Consumer,
    Record,
    TopicPartition,
    TransactionalProducer,
    Transport,
)
from durafka.transport.client_config import for_client
from durafka.transport.limits import RecordLimits

log = logging.getLogger("durafka.processor")

#: Timers fired per partition per iteration at most (keeps one batch bounded).
MAX_TIMERS_PER_ITERATION = 1000
#: How often a processor looks for partitions that nobody processes.
COVERAGE_CHECK_INTERVAL_S = 60.0
#: How long a partition waits for its changelog to catch up with its committed offset
#: (see Processor._restore_again); the markers of a commit normally follow in ms.
CHANGELOG_LAG_BOUND_S = 60.0


class Processor:
    """Runs orchestrations on the partitions of ``H.orchestrations`` it owns.

    Partitions come from the consumer group ``<hub>.processors`` (cooperative
    rebalancing across processes), or from a static list (one producer and
    ``transactional.id`` per partition, for fencing); see the module docstring.

    Example:
        >>> stop = threading.Event()
        >>> Processor(settings, registry, transport, store_factory).run(stop)
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        transport: Transport,
        store_factory: StoreFactory,
        *,
        partitions: list[int] | None = None,
        clock: Callable[[], float] = time.time,
        processor_id: str | None = None,
        local_activities: LocalActivities | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.transport = transport
        self.store_factory = store_factory
        self.static_partitions = sorted(set(partitions)) if partitions is not None else None
        self.clock = clock
        self.topics = HubTopics(settings.task_hub)
        self.cache = InstanceCache(settings.cache_size)
        self._local = local_activities
        self._owned: dict[int, OwnedPartition] = {}
        self._lost: set[int] = set()
        # Partitions whose changelog lagged their committed offset (see _restore_again).
        self._behind: dict[int, float] = {}
        self._stop: threading.Event | None = None
        n_orchestrations = transport.partition_count(self.topics.orchestrations)
        self._n_partitions = n_orchestrations
        self._outbox = Outbox(
            self.topics, n_orchestrations, transport.partition_count(self.topics.activities)
        )
        self._processor_id = processor_id or uuid.uuid4().hex[:12]
        #: Builds (and counts) this processor's dead letters.
        self.dead_letters = DeadLetters.for_settings(
            settings,
            transport.partition_count(self.topics.dead_letters),
            f"processor {self._processor_id}",
        )
        self._limits = RecordLimits.for_hub(
            settings.task_hub, for_client(settings.client_config, "producer")
        )
        #: Sources of records Kafka refused, marked for the batch processed again.
        self.poison = PoisonSources()
        #: Dead-letters (or forwards) what the batches cannot apply.
        self.rejects = Rejects(self.topics, self.dead_letters, n_orchestrations, self.poison)
        self._entities = EntityProcessor(
            registry,
            self.topics,
            self._outbox.send,
            self.rejects,
            max_payload_bytes=settings.max_payload_bytes,
            limits=self._limits,
        )
        self._tracing = Tracing.for_settings(settings)
        self._orchestrations = OrchestrationProcessor(
            settings,
            registry,
            self.topics,
            self.cache,
            self._outbox,
            self._entities,
            local_activities,
            self._tracing,
            self._limits,
            self.rejects,
        )
        if self.static_partitions is not None:
            bad = [p for p in self.static_partitions if not 0 <= p < n_orchestrations]
            if bad:
                raise DurafkaError(
                    f"partitions {bad} do not exist: {self.topics.orchestrations} has "
                    f"{n_orchestrations} partitions"
                )
        self._malformed = MalformedKeys(self.topics, self.rejects)
        #: Heartbeats of running activities, and their timers.
        self.heartbeats = Heartbeats()
        self._consumer: Consumer = transport.consumer(
            group_id=self.topics.processor_group,
            **for_client(settings.client_config, "consumer"),
        )
        self._restorer = Restorer(
            lambda: transport.consumer(None, **for_client(settings.client_config, "consumer")),
            self.topics.changelog,
            open_store=self._open_store,
            reject=self._malformed.screen,
            max_records=settings.restore_records_per_iteration,
            retention_ms=TombstoneRetention.of_hub(transport, settings.task_hub, settings.topology),
            progress=lambda tp, done, total: self.metrics.restore_progress(
                tp.partition, done, total
            ),
        )
        delay = settings.state_cleanup_delay_ms
        self._cleaner = (
            StoreCleaner(store_factory, settings.task_hub, delay / 1000)
            if delay is not None
            else None
        )
        #: Group mode: the wall time a transaction that committed began (see _release).
        self._last_commit_at: float | None = None
        # Group mode: one producer for the process (EOS v2); static: one per partition.
        self._producer: TransactionalProducer | None = None
        self._static_producers: dict[int, TransactionalProducer] = {}
        if self.static_partitions is None:
            self._producer = self._new_producer(
                self.topics.processor_transactional_id(self._processor_id)
            )
        self._started = False
        self._next_coverage_check = time.monotonic() + COVERAGE_CHECK_INTERVAL_S
        self._coverage: dict[int, tuple[int, float]] = {}
        self.batches_committed = 0
        #: This processor's Prometheus metrics, liveness and readiness.
        self.metrics = ProcessorMetrics(
            registry,
            transport,
            settings.client_config,
            group=self.topics.processor_group,
            topic=self.topics.orchestrations,
            owned=self._owned,
            ready=lambda: self.is_ready,
            position=self._consumer.position,
            cache=self.cache,
            orchestrations=self._orchestrations,
            dead_letters=self.dead_letters,
            restoring=lambda: self._restorer.partitions,
        )

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Join the group, or claim the static partitions (fencing their earlier owners).

        Raises:
            PartitionOwnershipError: static mode, and members of the processor group
                own some of these partitions.
        """
        if self._started:
            return
        self._started = True
        if self.static_partitions is None:
            self._consumer.subscribe(
                [self.topics.orchestrations], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            return
        for p in self.static_partitions:
            # Initialising the partition's transactional.id fences every earlier owner:
            # a dead incarnation of this process, or an overlapping range.
            self._static_producers[p] = self._new_producer(
                self.topics.partition_transactional_id(p)
            )
        self._check_no_group_owner(self.static_partitions)
        tps = [TopicPartition(self.topics.orchestrations, p) for p in self.static_partitions]
        committed = self._consumer.committed(tps)
        self._consumer.assign({tp: committed.get(tp) for tp in tps})
        self._on_assign(tps)

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, then release every partition."""
        self._stop = stop
        try:
            self.start()
            while not stop.is_set():
                self.run_once()
        finally:
            self.close()

    def run_once(self, poll_timeout: float | None = None) -> int:
        """One iteration: a slice of restore, poll, process, commit, upkeep.

        Returns how many records it consumed.
        """
        if not self._started:
            self.start()
        restoring = self._restorer.busy
        if restoring:
            for restored in self._restorer.step():
                self._ready(restored)
        if poll_timeout is None:
            # While restoring, polling only keeps the membership and serves the ready ones.
            poll_timeout = 0.0 if restoring else self._poll_timeout()
        owned_before = dict(self._owned)
        records = self._consumer.poll_batch(self.settings.batch_size, poll_timeout)
        self._process(records, owned_before)
        if time.monotonic() >= self._next_coverage_check:
            self._check_coverage()
        if self._cleaner is not None and self._cleaner.due:
            self._cleaner.step({*self._owned, *self._restorer.partitions})
        self.metrics.iteration(len(records))
        return len(records)

    def close(self) -> None:
        """Close the consumers, the producers and every store."""
        if self._local is not None:
            self._local.close()
        for part in list(self._owned.values()):
            self._release(part, clean=True)
        self._owned.clear()
        for store in self._restorer.close():
            self._close_store(store)
        try:
            self._consumer.close()
        except Exception:  # closing is best effort
            log.debug("consumer close failed", exc_info=True)
        producers = [self._producer, *self._static_producers.values()]
        for producer in producers:
            if producer is None:
                continue
            try:
                producer.close()
            except Exception:
                log.debug("producer close failed", exc_info=True)

    def _new_producer(self, transactional_id: str) -> TransactionalProducer:
        producer = self.transport.transactional_producer(
            transactional_id,
            **{
                "transaction.timeout.ms": str(self.settings.transaction_timeout_ms),
                **for_client(self.settings.client_config, "producer"),
            },
        )
        producer.init_transactions()
        return producer

    # -- partitions -------------------------------------------------------------------

    def _on_assign(self, tps: list[TopicPartition]) -> None:
        busy = set(self._restorer.partitions)
        new = [tp.partition for tp in tps if tp.partition not in self._owned.keys() | busy]
        if not new:
            return
        # Paused until restored: no record is processed against a stale store.
        self._consumer.pause(tps)
        self._restorer.add(new)
        log.info("assigned partitions %s of %s", new, self.topics.orchestrations)

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in tps}
        for p in gone:
            self._behind.pop(p, None)
            restoring = self._restorer.cancel(p)
            if restoring is not None:
                self._close_store(restoring)
            part = self._owned.pop(p, None)
            if part is not None:
                self._release(part, clean=True)
        self.cache.drop_partitions(gone)
        self._malformed.forget(gone)
        self.heartbeats.forget(gone)
        self.poison.forget(gone)
        log.info("revoked partitions %s of %s", sorted(gone), self.topics.orchestrations)

    def _release(self, part: OwnedPartition, *, clean: bool = False) -> None:
        """Close a partition's store; ``clean``: its last commit was written to it."""
        if clean:
            self._refresh_checkpoint(part)
        self._close_store(part.store)

    def _refresh_checkpoint(self, part: OwnedPartition) -> None:
        """Date the store's checkpoint to the last transaction that committed (group mode).

        A group-mode commit passes the group generation check, which proves that this
        member owned every partition of its assignment when it began: no other
        process had written to their changelogs, so every record the store has not
        seen was written later. Without this, the checkpoint of a partition with no
        input for a day would be as old, and its next owner here would wipe it.
        """
        since = self._last_commit_at
        if self._producer is None or since is None or since < part.ready_at:
            return
        try:
            store = part.store
            offset = store.changelog_offset()
            taken_at = store.checkpoint_time()
            if offset is not None and (taken_at is None or taken_at < since):
                store.write({}, offset, checkpoint_time=since)
        except DurafkaError:
            log.warning("dating the checkpoint of partition %d failed", part.number, exc_info=True)

    def _close_store(self, store: PartitionStore) -> None:
        try:
            store.close()
        except Exception:
            log.warning("closing the store %s failed", store, exc_info=True)

    def _open_store(self, p: int) -> PartitionStore:
        """The store of an assigned partition, when its restore begins."""
        if self.static_partitions is None:
            self._fence_static_owner(p)
        return self.store_factory.open(self.settings.task_hub, p)

    def _ready(self, restored: Restored) -> None:
        """A restored partition: read it from its committed offset, process it."""
        p = restored.partition
        tp = TopicPartition(self.topics.orchestrations, p)
        store = restored.store
        try:
            start = self._consumer.committed([tp]).get(tp)
            if start is None:
                start = self._consumer.watermarks(tp)[0]
        except TransportError as exc:
            # E.g. the group coordinator, just restarted, still completing the previous
            # owner's transaction (a stable offset is asked for): not a reason to stop.
            log.warning("partition %d: %s; restoring on and asking again", p, exc)
            self._restore_on(p, store)
            return
        written = decode_input_offset(store.get(INPUT_OFFSET_KEY))
        if (
            written is not None
            and written < start
            and self._restore_again(p, store, written, start)
        ):
            return
        if written is not None and written > start:
            # The transaction that wrote it committed (read_committed), offsets included;
            # their commit marker is not visible yet: its input is in the state already.
            start = written
        # Read from the committed offset whatever was fetched before (a seek also
        # drops records librdkafka prefetched for the paused partition).
        self._consumer.seek(tp, start)
        self._behind.pop(p, None)
        part = OwnedPartition(
            p, store, start, producer=self._static_producers.get(p), ready_at=time.time()
        )
        part.next_timer_ms = self._malformed.first_due(p, store.iter_prefix(TIMER_PREFIX))
        self._owned[p] = part
        self._consumer.resume([tp])
        self.metrics.restored(p, restored.applied, restored.seconds)
        log.info(
            "partition %d ready at offset %d: restored %d changelog records in %.2fs%s",
            p,
            start,
            restored.applied,
            restored.seconds,
            " (in full: the local state was stale)" if restored.wiped else "",
        )

    def _restore_again(self, p: int, store: PartitionStore, written: int, start: int) -> bool:
        """The changelog lacks the transaction that committed ``start``: restore on.

        ``commit_transaction`` returns once the coordinator decided; the markers
        that make the records readable follow, partition by partition. So the
        input offset may be visible (``__consumer_offsets`` has its marker) while
        the changelog's last stable offset is still below that transaction's
        records, and the restore that ended there lacks them (the state of the
        previous owner's last commit, processed again on top: lost updates).

        Returns False, once :data:`CHANGELOG_LAG_BOUND_S` passed: a processor of an
        older release (a rolling upgrade) commits without writing the offset, and
        its partition must not wait forever.
        """
        since = self._behind.get(p)
        if since is not None and time.monotonic() - since > CHANGELOG_LAG_BOUND_S:
            log.error(
                "partition %d: its changelog still has only the transactions up to input "
                "offset %d after %.0f s, its committed offset is %d; going on from the "
                "committed offset (expected once after an upgrade from a release that did "
                "not record the offset; otherwise the changelog lost records)",
                p,
                written,
                CHANGELOG_LAG_BOUND_S,
                start,
            )
            return False
        if since is None:
            self._behind[p] = time.monotonic()
            log.warning(
                "partition %d: its changelog has the transactions up to input offset %d, "
                "its committed offset is %d: the previous owner's last commit is not "
                "readable yet (its markers follow the commit); restoring on",
                p,
                written,
                start,
            )
        self._restore_on(p, store)
        return True

    def _restore_on(self, p: int, store: PartitionStore) -> None:
        """Keep ``p`` paused and restore it again: from its checkpoint, so only what
        the changelog gained since is read."""
        self._close_store(store)
        self._restorer.add([p])

    def _fence_static_owner(self, p: int) -> None:
        """Initialise partition ``p``'s static ``transactional.id``: a static-range
        processor still claiming ``p`` is fenced (its next transaction fails)."""
        producer = self.transport.transactional_producer(
            self.topics.partition_transactional_id(p),
            **{
                "transaction.timeout.ms": str(self.settings.transaction_timeout_ms),
                **for_client(self.settings.client_config, "producer"),
            },
        )
        try:
            producer.init_transactions()
        finally:
            producer.close()

    def _check_no_group_owner(self, partitions: Iterable[int]) -> None:
        mine = set(partitions)
        clashes: dict[str, list[int]] = {}
        topic = self.topics.orchestrations
        for member, tps in self.transport.group_assignments(self.topics.processor_group).items():
            owned = sorted(tp.partition for tp in tps if tp.topic == topic and tp.partition in mine)
            if owned:
                clashes[member] = owned
        if clashes:
            detail = "; ".join(f"member {m} owns {ps}" for m, ps in clashes.items())
            raise PartitionOwnershipError(
                f"cannot claim static partitions {sorted(mine)} of {topic}: group-mode "
                f"processors of task hub {self.settings.task_hub!r} own some of them ({detail}). "
                "Static ranges and group mode on one task hub would process these partitions "
                "twice: stop the group-mode processors (`durafka run`/`durafka processor` "
                "without --partitions), or run every processor in group mode."
            )

    def _lose(self, partitions: Iterable[int], reason: str) -> None:
        """Give up static partitions another process claimed; stop if none is left.

        :meth:`_check_coverage` claims one again if nobody commits it while input waits.
        """
        lost = sorted(partitions)
        if not lost:
            return
        topic = self.topics.orchestrations
        for p in lost:
            part = self._owned.pop(p, None)
            if part is not None:
                self._release(part)
            restoring = self._restorer.cancel(p)
            if restoring is not None:
                self._close_store(restoring)
            producer = self._static_producers.pop(p, None)
            if producer is not None:
                try:
                    producer.close()
                except Exception:
                    log.debug("closing a fenced producer failed", exc_info=True)
            self._lost.add(p)
            self._behind.pop(p, None)
        gone = set(lost)
        self.cache.drop_partitions(gone)
        # As on a revocation: a partition claimed again starts afresh.
        self._malformed.forget(gone)
        self.heartbeats.forget(gone)
        self.poison.forget(gone)
        self._consumer.pause([TopicPartition(topic, p) for p in lost])
        log.error(
            "gave up partitions %s of %s: %s. Another processor claimed them (an overlapping "
            "static range, or a group-mode processor on this task hub; check the ranges "
            "with `durafka deploy check`), or one that is gone: a partition nobody commits "
            "for %.0f s while input waits is claimed again.",
            lost,
            topic,
            reason,
            COVERAGE_CHECK_INTERVAL_S,
        )
        assert self.static_partitions is not None
        if self._lost >= set(self.static_partitions):
            raise PartitionOwnershipError(
                f"every partition of this processor ({self.static_partitions}) of {topic} was "
                f"claimed by another processor ({reason}); nothing is left to process"
            )

    @staticmethod
    def _first_timer(store: PartitionStore) -> int | None:
        # Malformed keys are skipped: the scans that find them report them.
        return first_due(store.iter_prefix(TIMER_PREFIX), lambda *_: None)

    def next_timer_ms(self) -> int | None:
        """The due time of the earliest timer of the owned partitions (None: no timer)."""
        dues = [p.next_timer_ms for p in self._owned.values() if p.next_timer_ms is not None]
        return min(dues) if dues else None

    @property
    def is_idle(self) -> bool:
        """No partition is waiting to be restored (used by the time-skipping test env)."""
        return not self._restorer.busy

    @property
    def is_ready(self) -> bool:
        """Partitions assigned and every one of them restored (``/readyz``).

        A processor that owns no partition (more processors than partitions) is
        not ready: it processes nothing.
        """
        return self._started and bool(self._owned) and not self._restorer.busy

    @property
    def owned_partitions(self) -> list[int]:
        """The partitions this processor currently processes."""
        return sorted(self._owned)

    @property
    def restoring_partitions(self) -> list[int]:
        """The assigned partitions whose stores are being restored (paused until then)."""
        return self._restorer.partitions

    @property
    def stopped_partitions(self) -> dict[int, str]:
        """Owned partitions it stopped consuming (newer release's records), with the reason."""
        return {p: part.stopped for p, part in self._owned.items() if part.stopped is not None}

    def _poll_timeout(self) -> float:
        timeout = 0.05
        now_ms = self.clock() * 1000
        for part in self._owned.values():
            if part.next_timer_ms is not None:
                timeout = min(timeout, max(0.0, (part.next_timer_ms - now_ms) / 1000))
        return timeout

    def _check_coverage(self) -> None:
        """Warn about partitions with waiting input that no processor committed for a while,
        and claim again such partitions this static processor gave up.

        Every transaction commits its partitions' offsets, so a committed offset that
        stays put below the end of the partition means nobody processes it (a gap
        between static ranges, or a processor that hangs).
        """
        self._next_coverage_check = time.monotonic() + COVERAGE_CHECK_INTERVAL_S
        topic = self.topics.orchestrations
        tps = [TopicPartition(topic, p) for p in range(self._n_partitions)]
        try:
            committed = self._consumer.committed(tps)
            ends = {tp: self._consumer.watermarks(tp) for tp in tps}
        except DurafkaError as exc:
            log.debug("coverage check skipped: %s", exc)
            return
        for p, reason in self.stopped_partitions.items():
            log.error(
                "partition %d of %s is still stopped: %s", p, self.topics.orchestrations, reason
            )
        now = time.monotonic()
        stuck: dict[int, str] = {}
        for tp in tps:
            low, high = ends[tp]
            offset = committed.get(tp)
            position = low if offset is None else offset
            previous = self._coverage.get(tp.partition)
            if position >= high or previous is None or previous[0] != position:
                self._coverage[tp.partition] = (position, now)
                continue
            idle = now - previous[1]
            if idle >= COVERAGE_CHECK_INTERVAL_S:
                stuck[tp.partition] = f"{high - position} offsets waiting, {idle:.0f} s"
        abandoned = sorted(self._lost & stuck.keys())
        unclaimed = [f"{p} ({why})" for p, why in stuck.items() if p not in self._lost]
        if unclaimed:
            log.warning(
                "no processor committed partitions %s of %s although input waits: is a static "
                "range missing (`durafka deploy check`), or is a processor stuck?",
                ", ".join(unclaimed),
                topic,
            )
        if abandoned:
            self._claim_again(abandoned)

    def _claim_again(self, partitions: list[int]) -> None:
        """Claim given-up static partitions that nobody has committed since, input waiting.

        A fence says only that the ``transactional.id`` got a newer epoch. A live
        claimant commits whenever input waits; so the claimant is gone (a range
        resized away), or the epoch came from the coordinator aborting a transaction
        that outlived ``transaction_timeout_ms`` and :meth:`_fenced_by_timeout` could
        not take the partition back then (the group unknown while the broker was away).
        Initialising the id again fences whoever may still hold it.
        """
        log.warning(
            "claiming partitions %s of %s again: given up when fenced, nobody has committed "
            "them since, although input waits",
            partitions,
            self.topics.orchestrations,
        )
        for p in partitions:
            self._static_producers[p] = self._retrying_new_producer(
                self.topics.partition_transactional_id(p)
            )
            self._lost.discard(p)
        # Restored from the changelog, then read from the committed offsets (_ready).
        self._on_assign([TopicPartition(self.topics.orchestrations, p) for p in partitions])

    # -- one batch ------------------------------------------------------------------------

    def _process(self, records: list[Record], owned_before: dict[int, OwnedPartition]) -> None:
        batch = Batch(now_ms=int(self.clock() * 1000))
        self.poison.new_batch()
        for r in records:
            self._accept(batch, r, owned_before)
        for p in [p for p, share in batch.partitions.items() if share.part.stopped]:
            del batch.partitions[p]  # nothing of a stopped partition is applied or committed
        self._malformed.drain(batch, self._consumed())
        self._collect_due_timers(batch)
        if batch.is_empty():
            return
        try:
            for share in list(batch.partitions.values()):
                for iid, events in share.work.items():
                    self._apply(batch, share, iid, events)
            if batch.local:
                self._run_local_activities(batch)
        except UpgradeRequiredError as exc:
            # A stored value of a newer release: stop its partition, and process the
            # others again without it (this batch has already applied some of it).
            self._rewind(list(batch.partitions.values()))
            self._stop_partition(self._owned[exc.partition], str(exc))
            return
        self._orchestrations.emit_instance_writes(batch)
        self._commit(batch)

    def _consumed(self) -> dict[int, OwnedPartition]:
        """The owned partitions that are not stopped."""
        return {p: part for p, part in self._owned.items() if part.stopped is None}

    def _apply(
        self, batch: Batch, share: PartitionBatch, iid: str, events: list[HistoryEvent]
    ) -> None:
        """Hand one instance's (or entity's) events of the batch to what processes them.

        Raises:
            UpgradeRequiredError: its stored state is a newer release's.
        """
        marks = self.poison.of(share.number)
        mark = None if marks is None else marks.get(iid)
        if mark is not None and mark.strikes > 1:
            return  # not even its failure could be written: its input was dead-lettered
        try:
            if is_entity_id(iid):
                self._entities.process(share, iid, events)
            else:
                self._orchestrations.process_instance(batch, share, iid, events)
        except UpgradeRequiredError:
            raise
        except Exception as exc:
            # A bug must not become a crash loop on the same record: the
            # instance fails with the internal error and the batch goes on.
            log.exception("internal error processing instance %r", iid)
            try:
                failed = self._orchestrations.fail_internally(batch, share, iid, exc)
            except UpgradeRequiredError:
                raise
            except Exception:
                log.exception("could not fail instance %r after an internal error", iid)
                failed = False
            if not failed:  # no instance took the error: its records get it
                reason = f"durafka internal error: {type(exc).__name__}: {exc}"
                for ev in events:
                    self.rejects.event(share, iid, ev, reason, cause="InternalError")
        if mark is not None and self.poison.use(share.number, iid, "instance failed"):
            failure = FailureDetails(
                mark.error_type,
                f"a record of instance {iid!r} cannot be written, so it failed for its "
                f"partition to go on: {mark.reason}",
            )
            self._orchestrations.fail_instance(batch, share, iid, failure)

    def _accept(self, batch: Batch, r: Record, owned_before: dict[int, OwnedPartition]) -> None:
        p = r.partition()
        offset = r.offset()
        assert p is not None and offset is not None
        part = self._owned.get(p)
        if part is None or owned_before.get(p) is not part:
            # Assigned, revoked or reassigned during the poll: whoever owns the partition
            # now reads this record again from the committed offset.
            return
        if part.stopped or p in batch.deferred:
            # Stopped: nothing more of it is taken. Deferred: an earlier record of the
            # partition waits, and order is kept.
            return
        share = batch.of(part)
        value = r.value()
        key = r.key()
        try:
            if value is None:
                raise DecodeError("empty record value")
            iid, event = decode_message(value)
            # Before anything touches the store: an id with NUL would run into
            # another id's store keys; a key that is not the id puts the record on
            # a partition where the instance's other records never arrive.
            check_instance_id(iid)
            if key != iid.encode():
                raise InvalidInstanceIdError(
                    f"the record's key {key!r} is not the instance id {iid!r} of its "
                    "value; the key must be the instance id"
                )
        except UnknownSchemaError as exc:
            assert value is not None
            if key is not None and written_by_newer_release(
                value, exc.schema, key.decode("utf-8", "replace")
            ):
                self._stop_partition(
                    part,
                    f"the record at offset {offset} was written by a newer durafka release "
                    f"({exc}); upgrade this processor (nothing is lost: the partition goes on "
                    "from that record once an upgraded processor takes it)",
                )
                return
            share.next_offset = offset + 1
            self.rejects.record(share, r, str(exc), cause=type(exc).__name__)
            return
        except (DecodeError, InvalidInstanceIdError) as exc:
            share.next_offset = offset + 1
            self.rejects.record(share, r, str(exc), cause=type(exc).__name__)
            return
        kind = event.kind
        if kind is EventKind.TASK_HEARTBEAT:
            # Never reaches the instance (nor takes one of the batch's instance slots).
            share.next_offset = offset + 1
            self.heartbeats.beat(share, iid, event)
            return
        if kind is EventKind.EXECUTION_STARTED or iid[0] == ENTITY_ID_PREFIX:
            # From a producer that does not partition with murmur2: an instance or an
            # entity lives where its id hashes to (every other event goes there), and
            # would be split in two here. Other events are checked when their
            # instance is not found (OrchestrationProcessor._unknown_instance).
            right = self.rejects.right_partition(key, p)
            if right is not None:
                share.next_offset = offset + 1
                self.rejects.forward(share, r, right)
                return
        marks = self.poison.of(p)
        if marks is not None and iid in marks:
            mark = marks[iid]
            if is_entity_id(iid) or mark.strikes > 1:
                # Its records cannot be written: its input goes where people look.
                share.next_offset = offset + 1
                self.poison.use(p, iid, "input dead-lettered")
                reason = f"the records of {iid!r} cannot be written: {mark.reason}"
                self.rejects.record(share, r, reason, cause=_cause(mark.error_type))
                return
        instances = batch.instances
        if iid not in instances:
            if len(instances) >= self.settings.max_concurrent_orchestrations:
                # Enough instances for one batch: this one and everything after it in
                # the partition wait their turn (read again after the commit).
                batch.deferred[p] = offset
                return
            instances.add(iid)
        share.next_offset = offset + 1
        if kind is EventKind.TASK_COMPLETED or kind is EventKind.TASK_FAILED:
            self.heartbeats.completed(share, iid, event)
        share.add(iid, event, r)

    def _stop_partition(self, part: OwnedPartition, reason: str) -> None:
        """Stop consuming ``part`` (a newer release's record): pause it, commit nothing more.

        It stays assigned, so no other processor of this version takes it and meets
        the same record; it goes on when an upgraded processor gets it (a rebalance,
        a restart), from its committed offset.
        """
        if part.stopped is not None:
            return
        part.stopped = reason
        part.next_timer_ms = None
        tp = TopicPartition(self.topics.orchestrations, part.number)
        self._consumer.pause([tp])
        self._consumer.seek(tp, part.committed_offset)
        self.cache.drop_partitions({part.number})
        log.error("stopped consuming partition %d of %s: %s", part.number, tp.topic, reason)

    def _collect_due_timers(self, batch: Batch) -> None:
        now = batch.now_ms
        for part in self._owned.values():
            if part.next_timer_ms is None or part.next_timer_ms > now or part.stopped:
                continue
            share = batch.of(part)
            tx = share.tx
            part.next_timer_ms = None
            due_timers = tx.iter_range(TIMER_PREFIX, timer_upper_bound(now))
            instances = batch.instances
            limit = self.settings.max_concurrent_orchestrations
            for fired, (key, value) in enumerate(due_timers):
                if fired >= MAX_TIMERS_PER_ITERATION:
                    part.next_timer_ms = now  # more are due: next iteration
                    break
                try:
                    due, iid, seq = parse_timer_key(key)
                    heartbeat = value.startswith(HEARTBEAT_TIMER_MARK)
                    # The value names the execution that set the timer (empty: older timers).
                    execution = value.decode() if value and not heartbeat else None
                except MalformedKeyError as exc:
                    self._malformed.found(part.number, key, value, str(exc))
                    continue
                except UnicodeDecodeError:
                    self._malformed.found(
                        part.number, key, value, f"timer {key!r} with a value that is not UTF-8"
                    )
                    continue
                if iid not in instances:
                    if len(instances) >= limit:
                        part.next_timer_ms = now  # its turn comes in the next iteration
                        break
                    instances.add(iid)
                tx.delete(key)
                if heartbeat:
                    self.heartbeats.fired(share, iid, seq, due, value)
                    continue
                fired_event = HistoryEvent(
                    EventKind.TIMER_FIRED, now, seq=seq, fire_at=due, execution_id=execution
                )
                share.add(iid, fired_event)
                metrics.timer_fired(share, due, now)
            else:
                part.next_timer_ms = self._malformed.first_due(
                    part.number, tx.iter_range(timer_upper_bound(now), TIMER_END)
                )

    # -- activities next to the processor ----------------------------------------------------

    def _run_local_activities(self, batch: Batch) -> None:
        """Apply the results of activities run next to the processor, within this batch.

        Rounds repeat while results arrive (an orchestrator's next activity runs in
        the same batch too) until ``local_activity_wait_ms`` is spent; activities
        still running then go to ``H.activities`` for a worker, which adopts the
        running execution.
        """
        local = self._local
        assert local is not None
        deadline = time.monotonic() + local.wait_seconds
        while batch.local:
            started, batch.local = batch.local, []
            partition_of = {id(run): p for p, run in started}
            finished, unfinished = local.collect(
                [run for _, run in started], max(0.0, deadline - time.monotonic())
            )
            for run in unfinished:
                self._outbox.activity_task(batch.partitions[partition_of[id(run)]], run.task)
            results: dict[tuple[int, str], list[HistoryEvent]] = {}
            for run in finished:
                if run.result is not None:
                    self.metrics.activity_done(run.task.name, run.result, run.seconds)
                    if self._tracing is not None:
                        self._tracing.activity(run.task, None, run.result, run.seconds)
                p = partition_of.get(id(run))
                if p is None or run.result is None:
                    continue  # left over from a batch that failed before collecting it
                key = (p, run.task.instance_id)
                events = results.get(key)
                if events is None:
                    results[key] = [run.result]
                else:
                    events.append(run.result)
            for (p, iid), events in results.items():
                share = batch.partitions.get(p)
                if share is not None:
                    self._apply(batch, share, iid, events)
            if batch.local and time.monotonic() >= deadline:
                # The wait is spent: what the results just started goes to the worker.
                late = batch.local
                local.hand_off([run for _, run in late])
                for p, run in late:
                    self._outbox.activity_task(batch.partitions[p], run.task)
                batch.local = []

    # -- commit ----------------------------------------------------------------------------------

    def _commit(self, batch: Batch) -> None:
        # A share whose partition changed hands since it was taken commits nothing.
        shares = [s for s in batch.partitions.values() if self._owned.get(s.number) is s.part]
        if not shares:
            return
        began = time.time()
        if self._producer is not None:
            checkpoints = [self._checkpoint(self._producer, shares)]
        else:
            checkpoints = []
            for share in shares:
                producer = share.part.producer
                assert producer is not None
                checkpoints.append(self._checkpoint(producer, [share]))
        for checkpoint in checkpoints:
            started = time.perf_counter()
            outcome = checkpoint.commit()
            self.metrics.checkpointed(checkpoint, time.perf_counter() - started)
            if outcome is CheckpointOutcome.COMMITTED:
                if checkpoint.producer is self._producer:
                    self._last_commit_at = began
                for share in checkpoint.shares:
                    self.poison.committed(share.number)
                if checkpoint.dirty:
                    self._reset([s.number for s in checkpoint.dirty], "store write failed")
                self._read_deferred_again(batch, checkpoint.shares)
                continue
            if outcome is CheckpointOutcome.REJECTED:
                self._mark(checkpoint.rejected)
            self._after_failed_commit(checkpoint)
        self.cache.trim()
        self.batches_committed += 1

    def _read_deferred_again(self, batch: Batch, committed: list[PartitionBatch]) -> None:
        """Seek back to records left for a later batch (``max_concurrent_orchestrations``).

        Only after the commit: an aborted batch is read again from the committed
        offsets anyway.
        """
        if not batch.deferred:
            return
        topic = self.topics.orchestrations
        for share in committed:
            offset = batch.deferred.pop(share.number, None)
            if offset is not None and self._owned.get(share.number) is share.part:
                self._consumer.seek(TopicPartition(topic, share.number), offset)

    def _checkpoint(
        self, producer: TransactionalProducer, shares: list[PartitionBatch]
    ) -> Checkpoint:
        return Checkpoint(
            producer,
            shares,
            input_topic=self.topics.orchestrations,
            changelog_topic=self.topics.changelog,
            limits=self._limits,
            group_metadata=self._consumer.group_metadata,
            commit_timeout=self.settings.commit_timeout_ms / 1000,
            stop=self._stop,
            record_input_offsets=not self.settings.is_memory,
            transaction_timeout=self.settings.transaction_timeout_ms / 1000,
        )

    def _mark(self, rejected: list[Rejection]) -> None:
        """Mark whose processing made each refused record (the retried batch acts on it)."""
        for rejection in rejected:
            share = rejection.share
            source = share.source_of(rejection.record, self.topics.changelog)
            error_type = TOO_LARGE if rejection.too_large else "durafka.errors.RecordRejectedError"
            self.poison.mark(share.number, source, rejection.reason, error_type)

    def _after_failed_commit(self, checkpoint: Checkpoint) -> None:
        outcome = checkpoint.outcome
        partitions = checkpoint.partitions
        log.warning(
            "transaction of partitions %s %s: %s",
            partitions,
            {
                CheckpointOutcome.ABORTED: "aborted, processing the batch again",
                CheckpointOutcome.REJECTED: "refused a record, processing the batch again",
                CheckpointOutcome.FENCED: "fenced",
                CheckpointOutcome.UNKNOWN: "has an unknown outcome, restoring the partitions",
            }.get(outcome, str(outcome))
            if outcome is not None
            else "failed",
            checkpoint.error,
        )
        static = self.static_partitions is not None
        if (
            outcome is CheckpointOutcome.FENCED
            and static
            and not self._fenced_by_timeout(checkpoint)
        ):
            self._lose(partitions, f"the producer was fenced: {checkpoint.error}")
            return
        if checkpoint.producer_unusable:
            self._replace_producer(checkpoint.producer, partitions)
            if isinstance(checkpoint.error, ProducerGivenUpError):
                self._replace_other_static_producers(partitions)
        if outcome is CheckpointOutcome.ABORTED or outcome is CheckpointOutcome.REJECTED:
            self._rewind(checkpoint.shares)
        else:
            # The commit may have happened: the stores and positions from before it are
            # not to be trusted. Restore from the changelog, read from the committed offsets.
            self._reset(partitions, f"transaction outcome {outcome.value if outcome else '?'}")

    def _fenced_by_timeout(self, checkpoint: Checkpoint) -> bool:
        """Whether a static range's fenced transaction was the coordinator's to abort:
        then the partitions are taken back at once (new producer, restore) instead of
        given up.

        Kafka reports a claimant's ``init_transactions`` and the coordinator's abort
        of a transaction past ``transaction_timeout_ms`` (a broker down or frozen that
        long) with the same error; only a transaction that old can be the second.
        Taking the partitions back fences a static claimant that came in the same
        seconds (it gives them up, and finds this processor committing them); a
        group-mode member that owns one is left alone (its per-partition fence at
        assignment would fence this processor again).
        """
        if not checkpoint.outlived_timeout:
            return False
        partitions = checkpoint.partitions
        try:
            self._check_no_group_owner(partitions)
        except DurafkaError as exc:  # a group member owns one, or the group is unknown now
            log.warning("not taking partitions %s back after the fence: %s", partitions, exc)
            return False
        log.warning(
            "the transaction of partitions %s of %s was fenced after more than "
            "transaction_timeout_ms (%d ms): the transaction coordinator aborted it; taking "
            "the partitions back with a new producer",
            partitions,
            self.topics.orchestrations,
            self.settings.transaction_timeout_ms,
        )
        return True

    def _replace_producer(self, old: TransactionalProducer, partitions: list[int]) -> None:
        """A new producer with the same ``transactional.id``; its ``init_transactions``
        completes or aborts whatever the old one left at the coordinator."""
        try:
            old.abandon()
        except Exception:
            log.debug("releasing the old producer failed", exc_info=True)
        if self._producer is old:
            tid = self.topics.processor_transactional_id(self._processor_id)
            self._producer = self._retrying_new_producer(tid)
            return
        for p in partitions:
            if self._static_producers.get(p) is old:
                producer = self._retrying_new_producer(self.topics.partition_transactional_id(p))
                self._static_producers[p] = producer
                part = self._owned.get(p)
                if part is not None:
                    part.producer = producer

    def _replace_other_static_producers(self, replaced: list[int]) -> None:
        """Replace every static producer but those of ``replaced``, between transactions.

        After one was given up stuck in librdkafka, the others that lived through
        the same outage were seen stuck the same way on their next transaction, one
        after the other, each for the call's whole bound (soak seed 506097: four
        partitions, 140 s). New clients are not affected.
        """
        others = sorted(p for p in self._static_producers if p not in replaced)
        if not others:
            return
        log.warning(
            "replacing the producers of partitions %s of %s as well: they lived through the "
            "same outage",
            others,
            self.topics.orchestrations,
        )
        for p in others:
            self._replace_producer(self._static_producers[p], [p])

    def _retrying_new_producer(self, transactional_id: str) -> TransactionalProducer:
        delay = 0.1
        while True:
            try:
                return self._new_producer(transactional_id)
            except TransactionError as exc:
                if exc.fatal or (self._stop is not None and self._stop.is_set()):
                    raise
                log.warning("creating producer %s failed, retrying: %s", transactional_id, exc)
            except DurafkaError as exc:
                if self._stop is not None and self._stop.is_set():
                    raise
                log.warning("creating producer %s failed, retrying: %s", transactional_id, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _rewind(self, shares: list[PartitionBatch]) -> None:
        """Process the shares' input again: from the committed offsets, on the stored state."""
        numbers = {s.number for s in shares}
        self.cache.drop_partitions(numbers)
        self.heartbeats.forget(numbers)
        topic = self.topics.orchestrations
        for share in shares:
            part = share.part
            if self._owned.get(part.number) is not part:
                continue
            self._consumer.seek(TopicPartition(topic, part.number), part.committed_offset)
            part.next_timer_ms = self._first_timer(part.store)

    def _reset(self, partitions: list[int], reason: str) -> None:
        """Close partitions dirty: drop their state, restore it, read from the committed offsets."""
        log.warning("restoring partitions %s from the changelog: %s", partitions, reason)
        self.cache.drop_partitions(set(partitions))
        self.heartbeats.forget(partitions)
        topic = self.topics.orchestrations
        for p in partitions:
            part = self._owned.pop(p, None)
            if part is None:
                continue
            self._release(part)
            self._consumer.pause([TopicPartition(topic, p)])
            self._restorer.add([p])


def _cause(error_type: str) -> str:
    """The metric label of a dead letter for ``error_type`` (its last dotted name)."""
    return error_type.rsplit(".", 1)[-1]
