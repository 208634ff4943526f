"""The processor loop: one Kafka transaction per batch (exactly-once, EOS v2 style).

Each iteration:

1. poll a batch from the assigned partitions of ``H.orchestrations`` (read_committed);
2. group its records by partition and instance, add the timers that came due;
3. hand each instance's events to :class:`~durafka.processor.orchestrations.Orchestrations`
   (load from cache, else store + replay; apply; one step; route the actions)
   or, for entities, to :class:`~durafka.processor.entities.EntityProcessor`;
   run the activities started next to the processor (:mod:`durafka.processor.local`);
4. in one transaction: activity tasks, messages to other instances, status
   records, dead letters and one changelog record per dirty store key; flush;
   send the consumer offsets; commit;
5. only then write each partition's store batch together with the changelog
   offset reached (the checkpoint).

A failed commit aborts, drops the cached state of the batch's partitions and
seeks back to the batch's first offsets, so the batch is processed again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from durafka.activities.local import LocalActivities
from durafka.codec.records import (
    decode_message,
    encode_dead_letter,
)
from durafka.entities import is_entity_id
from durafka.errors import DecodeError, DurafkaError, TransactionError
from durafka.processor.batch import Batch, Outbox, OwnedPartition
from durafka.processor.entities import EntityProcessor
from durafka.processor.instances import InstanceCache
from durafka.processor.orchestrations import Orchestrations
from durafka.registry import Registry
from durafka.runtime.history import (
    EventKind,
    HistoryEvent,
)
from durafka.settings import Settings
from durafka.state.base import PartitionStore, StoreFactory
from durafka.state.keys import (
    TIMER_END,
    TIMER_PREFIX,
    parse_timer_key,
    timer_upper_bound,
)
from durafka.state.restore import restore_partition
from durafka.state.transaction import StoreTransaction
from durafka.topology import HubTopics, partition_for
from durafka.transport.base import Consumer, Record, TopicPartition, Transport
from durafka.transport.client_config import for_client

log = logging.getLogger("durafka.processor")

K = EventKind
#: Timers fired per partition per iteration at most (keeps one batch bounded).
MAX_TIMERS_PER_ITERATION = 1000


class Processor:
    """Runs orchestrations on the partitions of ``H.orchestrations`` it owns.

    Partitions come from the consumer group ``<hub>.processors`` (cooperative
    rebalancing across processes), or from a static list (one
    ``transactional.id`` per range, for fencing).

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
        self.static_partitions = partitions
        self.clock = clock
        self.topics = HubTopics(settings.task_hub)
        self.cache = InstanceCache(settings.cache_size)
        self._local = local_activities
        self._owned: dict[int, OwnedPartition] = {}
        self._to_restore: list[int] = []
        n_orchestrations = transport.partition_count(self.topics.orchestrations)
        self._n_dead = transport.partition_count(self.topics.dead_letters)
        self._outbox = Outbox(
            self.topics, n_orchestrations, transport.partition_count(self.topics.activities)
        )
        self._entities = EntityProcessor(
            registry, self.topics, self._outbox.send, max_payload_bytes=settings.max_payload_bytes
        )
        self._orchestrations = Orchestrations(
            settings,
            registry,
            self.topics,
            self.cache,
            self._owned,
            self._outbox,
            self._entities,
            local_activities,
        )
        if partitions is not None:
            bad = [p for p in partitions if not 0 <= p < n_orchestrations]
            if bad:
                raise DurafkaError(
                    f"partitions {bad} do not exist: {self.topics.orchestrations} has "
                    f"{n_orchestrations} partitions"
                )
            suffix = f"p{min(partitions)}-{max(partitions)}" if partitions else "none"
        else:
            suffix = processor_id or uuid.uuid4().hex[:12]
        self._consumer: Consumer = transport.consumer(
            group_id=f"{settings.task_hub}.processors",
            **for_client(settings.client_config, "consumer"),
        )
        self._restore_consumer: Consumer | None = None
        self._producer = transport.transactional_producer(
            f"{settings.task_hub}.processor.{suffix}",
            **{
                "transaction.timeout.ms": str(settings.transaction_timeout_ms),
                **for_client(settings.client_config, "producer"),
            },
        )
        self._producer.init_transactions()
        self._changelog_offsets: dict[int, int] = {}
        self._delivery_error: Any = None
        self.batches_committed = 0

    # -- lifecycle ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, then release every partition."""
        if self.static_partitions is None:
            self._consumer.subscribe(
                [self.topics.orchestrations], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
        else:
            tps = [TopicPartition(self.topics.orchestrations, p) for p in self.static_partitions]
            committed = self._consumer.committed(tps)
            self._consumer.assign({tp: committed.get(tp) for tp in tps})
            self._on_assign(tps)
        try:
            while not stop.is_set():
                self.run_once()
        finally:
            self.close()

    def run_once(self, poll_timeout: float | None = None) -> int:
        """One iteration: poll, process, commit. Returns how many records it consumed."""
        if self._to_restore:
            self._restore_pending()
        if poll_timeout is None:
            poll_timeout = self._poll_timeout()
        records = self._consumer.poll_batch(self.settings.batch_size, poll_timeout)
        if self._to_restore:
            # An assignment arrived during the poll; its records (if any) come again.
            self._restore_pending()
        self._process(records)
        return len(records)

    def close(self) -> None:
        """Close the consumers, the producer and every store."""
        if self._local is not None:
            self._local.close()
        for part in list(self._owned.values()):
            self._release(part)
        self._owned.clear()
        for c in (self._consumer, self._restore_consumer):
            if c is not None:
                try:
                    c.close()
                except Exception:  # closing is best effort
                    log.debug("consumer close failed", exc_info=True)
        try:
            self._producer.close()
        except Exception:
            log.debug("producer close failed", exc_info=True)

    # -- partitions -------------------------------------------------------------------

    def _on_assign(self, tps: list[TopicPartition]) -> None:
        new = [tp.partition for tp in tps if tp.partition not in self._owned]
        if not new:
            return
        # Paused until restored: no record is processed against a stale store.
        self._consumer.pause(tps)
        self._to_restore.extend(new)
        log.info("assigned partitions %s of %s", new, self.topics.orchestrations)

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in tps}
        self._to_restore = [p for p in self._to_restore if p not in gone]
        for p in gone:
            part = self._owned.pop(p, None)
            if part is not None:
                self._release(part)
        self.cache.drop_partitions(gone)
        log.info("revoked partitions %s of %s", sorted(gone), self.topics.orchestrations)

    def _release(self, part: OwnedPartition) -> None:
        if part.tx is not None:
            part.tx.fail()
        try:
            part.store.close()
        except Exception:
            log.warning("closing the store of partition %d failed", part.number, exc_info=True)

    def _restore_pending(self) -> None:
        pending, self._to_restore = self._to_restore, []
        for p in pending:
            store = self.store_factory.open(self.settings.task_hub, p)
            if self._restore_consumer is None:
                self._restore_consumer = self.transport.consumer(
                    None, **for_client(self.settings.client_config, "consumer")
                )
            started = time.monotonic()
            n = restore_partition(
                store, self._restore_consumer, TopicPartition(self.topics.changelog, p)
            )
            part = OwnedPartition(p, store)
            part.next_timer_ms = self._first_timer(store)
            self._owned[p] = part
            log.info(
                "partition %d ready: restored %d changelog records in %.2fs",
                p,
                n,
                time.monotonic() - started,
            )
        self._consumer.resume([TopicPartition(self.topics.orchestrations, p) for p in pending])

    @staticmethod
    def _first_timer(store: PartitionStore) -> int | None:
        for key, _ in store.iter_prefix(TIMER_PREFIX):
            return parse_timer_key(key)[0]
        return None

    def next_timer_ms(self) -> int | None:
        """The due time of the earliest timer of the owned partitions (None: no timer)."""
        dues = [p.next_timer_ms for p in self._owned.values() if p.next_timer_ms is not None]
        return min(dues) if dues else None

    @property
    def is_idle(self) -> bool:
        """No partition is waiting to be restored (used by the time-skipping test env)."""
        return not self._to_restore

    def _poll_timeout(self) -> float:
        timeout = 0.05
        now_ms = self.clock() * 1000
        for part in self._owned.values():
            if part.next_timer_ms is not None:
                timeout = min(timeout, max(0.0, (part.next_timer_ms - now_ms) / 1000))
        return timeout

    # -- one batch ------------------------------------------------------------------------

    def _process(self, records: list[Record]) -> None:
        batch = Batch(now_ms=int(self.clock() * 1000))
        for r in records:
            self._accept(batch, r)
        self._collect_due_timers(batch)
        if not batch.work and not batch.out and not batch.next_offsets:
            return
        for p, instances in batch.work.items():
            part = self._owned.get(p)
            if part is None:  # revoked meanwhile: its records come again to the new owner
                continue
            for iid, events in instances.items():
                self._apply(batch, part, iid, events)
        if batch.local:
            self._run_local_activities(batch)
        self._orchestrations.emit_instance_writes(batch)
        self._commit(batch)

    def _apply(
        self, batch: Batch, part: OwnedPartition, iid: str, events: list[HistoryEvent]
    ) -> None:
        """Hand one instance's (or entity's) events of the batch to what processes them."""
        tx = part.transaction()
        try:
            if is_entity_id(iid):
                self._entities.process(batch, part.number, tx, iid, events)
            else:
                self._orchestrations.process_instance(batch, part, tx, iid, events)
        except Exception as exc:
            # A bug must not become a crash loop on the same record: the
            # instance fails with the internal error and the batch goes on.
            log.exception("internal error processing instance %r", iid)
            self._orchestrations.fail_internally(batch, part, tx, iid, exc)

    def _accept(self, batch: Batch, r: Record) -> None:
        p = r.partition()
        offset = r.offset()
        assert p is not None and offset is not None
        batch.first_offsets.setdefault(p, offset)
        batch.next_offsets[p] = offset + 1
        value = r.value()
        try:
            if value is None:
                raise DecodeError("empty record value")
            iid, event = decode_message(value)
        except DecodeError as exc:
            self._dead_letter(batch, r, str(exc))
            return
        batch.add(p, iid, event)

    def _dead_letter(self, batch: Batch, r: Record, reason: str) -> None:
        key = r.key()
        log.warning("dead-lettering %s[%s]@%s: %s", r.topic(), r.partition(), r.offset(), reason)
        batch.out.append(
            (
                self.topics.dead_letters,
                partition_for(key or b"", self._n_dead),
                key,
                encode_dead_letter(
                    reason,
                    r.topic() or "",
                    r.partition() or 0,
                    r.offset() or 0,
                    key,
                    r.value(),
                    batch.now_ms,
                ),
            )
        )

    def _collect_due_timers(self, batch: Batch) -> None:
        now = batch.now_ms
        for part in self._owned.values():
            if part.next_timer_ms is None or part.next_timer_ms > now:
                continue
            tx = part.transaction()
            part.next_timer_ms = None
            due_timers = tx.iter_range(TIMER_PREFIX, timer_upper_bound(now))
            for fired, (key, _) in enumerate(due_timers):
                if fired >= MAX_TIMERS_PER_ITERATION:
                    part.next_timer_ms = now  # more are due: next iteration
                    break
                due, iid, seq = parse_timer_key(key)
                tx.delete(key)
                batch.add(part.number, iid, HistoryEvent(K.TIMER_FIRED, now, seq=seq, fire_at=due))
            else:
                part.next_timer_ms = self._first_due_after(tx, now)

    @staticmethod
    def _first_due_after(tx: StoreTransaction, now: int) -> int | None:
        for key, _ in tx.iter_range(timer_upper_bound(now), TIMER_END):
            return parse_timer_key(key)[0]
        return None

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
                self._outbox.activity_task(batch, run.task)
            results: dict[tuple[int, str], list[HistoryEvent]] = {}
            for run in finished:
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
                part = self._owned.get(p)
                if part is not None:
                    self._apply(batch, part, iid, events)
            if batch.local and time.monotonic() >= deadline:
                # The wait is spent: what the results just started goes to the worker.
                late = [run for _, run in batch.local]
                local.hand_off(late)
                for run in late:
                    self._outbox.activity_task(batch, run.task)
                batch.local = []

    # -- writes and commit ----------------------------------------------------------------------

    def _commit(self, batch: Batch) -> None:
        producer = self._producer
        changelog = self.topics.changelog
        self._changelog_offsets = {}
        self._delivery_error = None
        parts = [part for part in self._owned.values() if part.tx is not None]
        try:
            producer.begin_transaction()
            for topic, partition, key, value in batch.out:
                producer.produce(topic, partition, key, value)
            for part in parts:
                assert part.tx is not None
                on_delivery = self._changelog_delivered
                for key, value in part.tx.prepare().items():
                    producer.produce(changelog, part.number, key, value, on_delivery)
            remaining = producer.flush(30.0)
            if remaining:
                raise TransactionError(f"{remaining} records were not delivered before the commit")
            if batch.next_offsets:
                topic = self.topics.orchestrations
                producer.send_offsets(
                    {TopicPartition(topic, p): o for p, o in batch.next_offsets.items()},
                    self._consumer.group_metadata(),
                )
            producer.commit_transaction()
            if self._delivery_error is not None:
                raise TransactionError(f"a changelog record failed: {self._delivery_error}")
        except Exception as exc:
            self._rollback(batch, parts, exc)
            return
        for part in parts:
            assert part.tx is not None
            next_offset = self._changelog_offsets.get(part.number)
            part.tx.complete(next_offset)
            part.tx = None
        self.cache.trim()
        self.batches_committed += 1

    def _changelog_delivered(self, err: Any, record: Record) -> None:
        if err is not None:
            self._delivery_error = err
            return
        p = record.partition()
        off = record.offset()
        if p is not None and off is not None:
            prev = self._changelog_offsets.get(p, -1)
            if off + 1 > prev:
                self._changelog_offsets[p] = off + 1

    def _rollback(self, batch: Batch, parts: list[OwnedPartition], exc: Exception) -> None:
        log.warning("batch failed, reprocessing it: %s", exc)
        try:
            self._producer.abort_transaction()
        except Exception:
            log.warning("aborting the transaction failed", exc_info=True)
        affected = {part.number for part in parts} | set(batch.first_offsets)
        for part in parts:
            assert part.tx is not None
            part.tx.fail()
            part.tx = None
        self.cache.drop_partitions(affected)
        topic = self.topics.orchestrations
        for p, offset in batch.first_offsets.items():
            if p in self._owned:
                self._consumer.seek(TopicPartition(topic, p), offset)
        for p in affected:
            part_ = self._owned.get(p)
            if part_ is not None:
                part_.next_timer_ms = self._first_timer(part_.store)
        if isinstance(exc, TransactionError) and getattr(exc, "fatal", False):
            raise exc
