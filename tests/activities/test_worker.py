"""The activity worker, on memory:// and on the real broker (helpers: workers.py)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from durafka.activities.deliveries import decode_note
from durafka.codec.records import (
    decode_dead_letter,
)
from durafka.errors import CommitOutcomeUnknownError, TransactionError
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.topology import HubTopics
from durafka.transport import TopicPartition, TransactionalProducer, Transport
from tests.activities.workers import (
    ACTIVITY_PARTITIONS,
    DEAD_LETTER_PARTITIONS,
    ORCHESTRATION_PARTITIONS,
    Running,
    assert_all_committed,
    produce_tasks,
    read_results,
    read_topic,
    task,
)
from tests.support.stuck import BlockingSendOffsets, a_broker_went_down, short_send_offsets_bound
from tests.support.waiting import wait_until

# -- results ------------------------------------------------------------------------------


def test_sync_and_async_activities_return_results(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    registry = Registry()

    def double(x: int) -> int:
        return 2 * x

    async def greet(name: str) -> str:
        await asyncio.sleep(0.01)
        return f"hello {name}"

    def no_input() -> list[int]:
        return [1, 2]

    for fn in (double, greet, no_input):
        registry.add_activity(fn)
    tasks = [task(f"i{n}", "double", n, seq=n, attempt=1 + n % 2) for n in range(10)]
    tasks += [task(f"g{n}", "greet", f"n{n}", seq=n) for n in range(10)]
    tasks.append(task("z", "no_input", seq=7))
    produce_tasks(transport, hub, tasks)
    start_worker(registry)

    results = read_results(transport, hub, len(tasks))
    for t in tasks:
        r = results[(t.instance_id, t.seq, t.attempt)]
        assert r.event.kind is EventKind.TASK_COMPLETED, r.event.failure
        assert r.key == t.instance_id.encode()
        assert r.partition == partition_for(t.instance_id.encode(), ORCHESTRATION_PARTITIONS)
    assert results[("i3", 3, 2)].event.payload == b"6"
    assert results[("g4", 4, 1)].event.payload == b'"hello n4"'
    assert results[("z", 7, 1)].event.payload == b"[1,2]"
    assert len(results) == len(tasks)
    assert_all_committed(transport, hub)


def test_failures_become_task_failed(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    registry = Registry()

    def explode(x: int) -> int:
        raise ValueError(f"boom {x}")

    async def explode_async() -> None:
        await asyncio.sleep(0)
        raise KeyError("async boom")

    def huge() -> str:
        return "x" * 2000

    registry.add_activity(explode)
    registry.add_activity(explode_async)
    registry.add_activity(huge)
    produce_tasks(
        transport,
        hub,
        [
            task("a", "explode", 5),
            task("b", "explode_async"),
            task("c", "no_such_activity", 1),
            task("d", "explode", "not an int"),
            task("e", "huge"),
        ],
    )
    start_worker(registry, max_payload_bytes=1000)

    results = read_results(transport, hub, 5)
    failures = {key[0]: r.event for key, r in results.items()}
    assert all(e.kind is EventKind.TASK_FAILED and e.failure for e in failures.values())

    a = failures["a"].failure
    assert a is not None and a.error_type == "builtins.ValueError"
    assert a.message == "boom 5"
    assert a.stack_trace is not None and "in explode" in a.stack_trace
    assert 'raise ValueError(f"boom {x}")' in a.stack_trace

    b = failures["b"].failure
    assert b is not None and b.error_type == "builtins.KeyError"
    assert b.stack_trace is not None and "in explode_async" in b.stack_trace

    c = failures["c"].failure
    assert c is not None and c.error_type == "durafka.errors.UnknownFunctionError"
    assert "'no_such_activity'" in c.message
    assert "explode" in c.message and "huge" in c.message  # the known ones are listed

    d = failures["d"].failure
    assert d is not None and d.error_type == "durafka.errors.SerializationError"
    assert "input of activity 'explode'" in d.message

    e = failures["e"].failure
    assert e is not None and e.error_type == "durafka.errors.PayloadTooLargeError"
    assert "result of activity 'huge'" in e.message
    assert_all_committed(transport, hub)


def test_undecodable_record_goes_to_dead_letters(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    registry = Registry()

    def echo(x: int) -> int:
        return x

    registry.add_activity(echo)
    topics = HubTopics(hub)
    partition = partition_for(b"k", ACTIVITY_PARTITIONS)
    producer = transport.producer()
    producer.produce(topics.activities, partition, b"garbage-key", b"\x00not avro")
    producer.produce(topics.activities, partition, None, None)  # a tombstone: no value
    assert producer.flush(10.0) == 0
    producer.close()
    # Queued behind the garbage in the same partition: must still be processed.
    tasks = [task("k", "echo", n, seq=n) for n in range(5)]
    produce_tasks(transport, hub, tasks)
    start_worker(registry)

    results = read_results(transport, hub, len(tasks))
    assert sorted(r.event.payload or b"" for r in results.values()) == [
        str(n).encode() for n in range(5)
    ]
    dead = read_topic(
        transport, topics.dead_letters, DEAD_LETTER_PARTITIONS, lambda records: len(records) >= 2
    )
    letters = sorted(
        (decode_dead_letter(r.value()) for r in dead), key=lambda d: d["source_offset"]
    )
    assert [(d["source_topic"], d["source_partition"], d["source_offset"]) for d in letters] == [
        (topics.activities, partition, 0),
        (topics.activities, partition, 1),
    ]
    assert letters[0]["key"] == b"garbage-key"
    assert letters[0]["value"] == b"\x00not avro"
    assert "bad marker" in letters[0]["reason"]
    assert "no value" in letters[1]["reason"]
    assert sorted(r.key() or b"" for r in dead) == [b"", b"garbage-key"]
    assert_all_committed(transport, hub)


def test_a_task_whose_instance_id_is_invalid_goes_to_dead_letters(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    ran: list[int] = []
    registry = Registry()

    def echo(x: int) -> int:
        ran.append(x)
        return x

    registry.add_activity(echo)
    # Its result would go to an instance that cannot exist (and NUL runs into "k"'s keys).
    produce_tasks(transport, hub, [task("k\x00evil", "echo", 1), task("k", "echo", 2)])
    start_worker(registry)

    results = read_results(transport, hub, 1)
    assert [r.instance_id for r in results.values()] == ["k"]
    [record] = read_topic(
        transport, HubTopics(hub).dead_letters, DEAD_LETTER_PARTITIONS, lambda rs: len(rs) >= 1
    )
    letter = decode_dead_letter(record.value())
    assert letter["key"] == b"k\x00evil" and "NUL" in letter["reason"]
    assert ran == [2]
    assert_all_committed(transport, hub)


# -- concurrency ----------------------------------------------------------------------------


def test_concurrency_is_bounded(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    registry = Registry()
    lock = threading.Lock()
    gate = threading.Event()
    state = {"running": 0, "max": 0, "started": 0}

    def enter() -> None:
        with lock:
            state["running"] += 1
            state["started"] += 1
            state["max"] = max(state["max"], state["running"])

    def leave() -> None:
        with lock:
            state["running"] -= 1

    def slow(x: int) -> int:
        enter()
        try:
            assert gate.wait(20.0)
            return x
        finally:
            leave()

    async def slow_async(x: int) -> int:
        enter()
        try:
            while not gate.is_set():
                await asyncio.sleep(0.005)
            return x
        finally:
            leave()

    registry.add_activity(slow)
    registry.add_activity(slow_async)
    tasks = [task(f"s{n}", "slow" if n % 2 else "slow_async", n) for n in range(8)]
    produce_tasks(transport, hub, tasks)
    start_worker(registry, max_concurrent_activities=4)

    wait_until(lambda: state["started"] >= 4, what="the first wave")
    # Give an unbounded worker every chance to start more than the first wave.
    threading.Event().wait(0.3)
    assert state["started"] == 4
    gate.set()

    results = read_results(transport, hub, len(tasks))
    assert len(results) == 8
    assert state["max"] == 4
    assert state["started"] == 8
    assert_all_committed(transport, hub)


def test_only_the_completed_prefix_is_committed(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    registry = Registry()
    gate = threading.Event()

    def slow() -> str:
        assert gate.wait(20.0)
        return "slow"

    def fast() -> str:
        return "fast"

    registry.add_activity(slow)
    registry.add_activity(fast)
    # One instance, so one partition: offsets 0 (slow), 1..3 (fast).
    tasks = [task("p", "slow", seq=0)] + [task("p", "fast", seq=n) for n in range(1, 4)]
    produce_tasks(transport, hub, tasks)
    start_worker(registry)

    results = read_results(transport, hub, 3)  # the fast ones overtake the slow one...
    assert {key[1] for key in results} == {1, 2, 3}
    tp = TopicPartition(HubTopics(hub).activities, partition_for(b"p", ACTIVITY_PARTITIONS))
    probe = transport.consumer(f"{hub}.workers")
    try:
        assert probe.committed([tp])[tp] in (None, 0)  # ...but their offsets wait for it
        gate.set()
        assert read_results(transport, hub, 4)[("p", 0, 1)].event.payload == b'"slow"'
        assert_all_committed(transport, hub)
        assert probe.committed([tp])[tp] == 4
    finally:
        probe.close()


# -- stopping and rebalancing ---------------------------------------------------------------


def _gated_registry(started: threading.Event, gate: threading.Event) -> Registry:
    registry = Registry()

    def gated() -> str:
        started.set()
        assert gate.wait(20.0)
        return "done"

    registry.add_activity(gated)
    return registry


def test_stop_drains_running_activities(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    started, gate = threading.Event(), threading.Event()
    produce_tasks(transport, hub, [task("d", "gated")])
    running = start_worker(_gated_registry(started, gate))
    assert started.wait(20.0)
    running.stop.set()
    gate.set()  # finishes after stop was requested: still committed
    running.join()
    assert running.error is None
    assert read_results(transport, hub, 1)[("d", 0, 1)].event.payload == b'"done"'
    assert_all_committed(transport, hub)


def test_stop_abandons_activities_after_the_drain_timeout(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    started, gate = threading.Event(), threading.Event()
    produce_tasks(transport, hub, [task("d", "gated")])
    running = start_worker(
        _gated_registry(started, gate), drain_timeout=timedelta(milliseconds=200)
    )
    assert started.wait(20.0)
    try:
        running.join(timeout=10.0)  # returns although the activity is still blocked
        assert running.error is None
    finally:
        gate.set()
    tp = TopicPartition(HubTopics(hub).activities, partition_for(b"d", ACTIVITY_PARTITIONS))
    probe = transport.consumer(f"{hub}.workers")
    try:
        assert probe.committed([tp])[tp] in (None, 0)  # so the next owner runs it again...
        note = decode_note(probe.committed_metadata([tp])[tp])
        assert note is not None and note.started == {0}  # ...and counts this delivery
    finally:
        probe.close()


def test_partitions_move_to_the_remaining_worker(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    registry = _counting_registry(runs)
    first = start_worker(registry)
    start_worker(registry)
    produce_tasks(transport, hub, [task(f"w{n}", "work", n) for n in range(10)])
    read_results(transport, hub, 10)
    first.join()  # leaves the group: every partition goes to the other worker
    assert first.error is None
    produce_tasks(transport, hub, [task(f"w{n}", "work", n) for n in range(10, 20)])
    results = read_results(transport, hub, 20)
    assert {key[0] for key in results} == {f"w{n}" for n in range(20)}
    assert_all_committed(transport, hub)


# -- failures of the commit -------------------------------------------------------------------


class _FaultyProducer:
    """Delegates to a real transactional producer; ``commit_transaction`` may fail."""

    def __init__(
        self, inner: TransactionalProducer, fail: Callable[[], BaseException | None]
    ) -> None:
        self._inner = inner
        self._fail = fail

    def commit_transaction(self, timeout: float = 30.0) -> None:
        error = self._fail()
        if error is not None:
            raise error
        self._inner.commit_transaction(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FaultyTransport:
    """A transport whose transactional producers fail commits as ``fail`` says."""

    def __init__(self, inner: Transport, fail: Callable[[], BaseException | None]) -> None:
        self._inner = inner
        self._fail = fail

    def transactional_producer(self, transactional_id: str, **config: Any) -> _FaultyProducer:
        return _FaultyProducer(
            self._inner.transactional_producer(transactional_id, **config), self._fail
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _counting_registry(runs: Counter[str]) -> Registry:
    registry = Registry()
    lock = threading.Lock()

    def work(x: int) -> int:
        with lock:
            runs[f"w{x}"] += 1
        return x * 10

    registry.add_activity(work)
    return registry


def test_crash_before_commit_reruns_the_activities(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    registry = _counting_registry(runs)
    tasks = [task(f"w{n}", "work", n) for n in range(6)]
    produce_tasks(transport, hub, tasks)

    # The first commit only says which tasks start (they start after it); the crash
    # comes with the commit of their results.
    commits = itertools.count()
    crashing = _FaultyTransport(
        transport,
        lambda: RuntimeError("simulated crash before commit") if next(commits) else None,
    )
    first = start_worker(registry, via=crashing, worker_id="w1")
    first.thread.join(20.0)
    assert isinstance(first.error, RuntimeError), first.error
    crashed_runs = sum(runs.values())
    assert crashed_runs >= 1

    # Same id: fences the crashed incarnation and aborts its open transaction.
    start_worker(registry, worker_id="w1")
    results = read_results(transport, hub, len(tasks))
    assert {r.event.payload for r in results.values()} == {str(n * 10).encode() for n in range(6)}
    assert all(r.event.kind is EventKind.TASK_COMPLETED for r in results.values())
    assert sum(runs.values()) >= len(tasks) + crashed_runs  # every task ran after the crash
    assert_all_committed(transport, hub)


def test_abortable_commit_failure_rewinds_and_reruns(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    registry = _counting_registry(runs)
    # The first commit only says which tasks start; the second carries their results.
    failures = iter([None, TransactionError("injected commit failure")])
    flaky = _FaultyTransport(transport, lambda: next(failures, None))
    tasks = [task(f"w{n}", "work", n) for n in range(6)]
    produce_tasks(transport, hub, tasks)
    running = start_worker(registry, via=flaky)

    results = read_results(transport, hub, len(tasks))
    assert {key[0] for key in results} == {t.instance_id for t in tasks}
    assert max(runs.values()) == 2  # the aborted batch ran again
    assert_all_committed(transport, hub)
    assert running.error is None and running.thread.is_alive()


class _UnknownOutcomeProducer:
    """The first commit carrying records reports its outcome unknown, as librdkafka does
    when the coordinator's reply is lost: after committing (``committed``), or without,
    and then every commit does, as with a coordinator that stopped answering."""

    def __init__(self, inner: TransactionalProducer, committed: bool, log: list[str]) -> None:
        self._inner = inner
        self._committed = committed
        self._log = log
        self._keys: list[bytes | None] = []
        self._broken = False
        #: The keys of the records of the transaction committed with an unknown outcome.
        self.unknown_keys: list[bytes | None] = []

    def begin_transaction(self) -> None:
        self._keys = []
        self._inner.begin_transaction()

    def produce(self, topic: str, partition: int, key: bytes | None, *args: Any, **kw: Any) -> None:
        self._keys.append(key)
        self._inner.produce(topic, partition, key, *args, **kw)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        self._log.append("commit")
        if self._broken or (self._keys and not self.unknown_keys):
            if self._committed:
                self._inner.commit_transaction(timeout)
                self.unknown_keys = self._keys
            else:
                self._broken = True
            raise CommitOutcomeUnknownError("no reply from the transaction coordinator (test)")
        self._inner.commit_transaction(timeout)

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self._log.append("abort")
        self._inner.abort_transaction(timeout)

    def abandon(self) -> None:
        self._log.append("abandon")
        self._inner.abandon()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _UnknownOutcomeTransport:
    """A transport whose first transactional producer has a commit of unknown outcome."""

    def __init__(self, inner: Transport, committed: bool) -> None:
        self._inner = inner
        self._committed = committed
        self.log: list[str] = []
        self.faulty: _UnknownOutcomeProducer | None = None

    def transactional_producer(self, transactional_id: str, **config: Any) -> Any:
        producer = self._inner.transactional_producer(transactional_id, **config)
        if self.faulty is not None:
            return producer
        self.faulty = _UnknownOutcomeProducer(producer, self._committed, self.log)
        return self.faulty

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_a_commit_of_unknown_outcome_abandons_the_producer(
    transport: Transport, hub: str, start_worker: Callable[..., Running], committed: bool
) -> None:
    """Aborting after a commit whose reply was lost could race it: the producer is
    abandoned, its successor settles the transaction, and the worker reads on from what
    the group committed. Before: it aborted and rewound to the offsets from before the
    commit (the committed results ran again), or, with a coordinator that stopped
    answering, retried with the same producer for ever."""
    runs: Counter[str] = Counter()
    lost = _UnknownOutcomeTransport(transport, committed)
    tasks = [task(f"w{n}", "work", n) for n in range(6)]
    produce_tasks(transport, hub, tasks)
    running = start_worker(_counting_registry(runs), via=lost)

    results = read_results(transport, hub, len(tasks))
    assert {key[0] for key in results} == {t.instance_id for t in tasks}
    # One task more on every partition: once they ran, so did anything taken again
    # before them (a partition's tasks start in order).
    later = [task(f"w{n}", "work", n) for n in (6, 7, 8, 9, 10, 11)]
    assert {partition_for(t.instance_id.encode(), ACTIVITY_PARTITIONS) for t in later} == set(
        range(ACTIVITY_PARTITIONS)
    )
    produce_tasks(transport, hub, later)
    read_results(transport, hub, len(tasks) + len(later))
    assert_all_committed(transport, hub)
    assert running.error is None and running.thread.is_alive()
    after = lost.log[lost.log.index("abandon") - 1 :]
    assert after[:2] == ["commit", "abandon"], lost.log  # abandoned, not aborted
    assert "abort" not in lost.log
    faulty = lost.faulty
    assert faulty is not None
    if committed:
        # What that commit made durable is not run again.
        assert faulty.unknown_keys
        for key in faulty.unknown_keys:
            assert key is not None
            assert runs[key.decode()] == 1, (key, runs)


def test_fatal_commit_failure_stops_the_worker(
    transport: Transport,
    hub: str,
    start_worker: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: Counter[str] = Counter()
    fenced = _FaultyTransport(transport, lambda: TransactionError("fenced!", fatal=True))
    produce_tasks(transport, hub, [task("w1", "work", 1)])
    with caplog.at_level(logging.WARNING, logger="durafka.worker"):
        running = start_worker(_counting_registry(runs), via=fenced)
        running.thread.join(20.0)
    assert not running.thread.is_alive()
    assert isinstance(running.error, TransactionError) and running.error.fatal
    messages = [r.getMessage() for r in caplog.records]
    # Its id is random, so it tried a new producer once, and stopped when that failed too.
    assert sum("was fenced" in m for m in messages) == 1, messages
    assert any("is fenced" in m for m in messages)


def test_a_worker_with_an_exclusive_id_goes_on_after_a_fence(
    transport: Transport,
    hub: str,
    start_worker: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: every fence stopped the worker. But the id App gives a worker is locked
    # in its state dir, so the only fence it can meet is the coordinator's: a
    # transaction that outlived transaction_timeout_ms, as across a broker restart
    # (soak seed 208895), is aborted by bumping the producer's epoch. The process
    # then exited with status 1 and waited for a supervisor.
    runs: Counter[str] = Counter()
    produced = [task("f0", "work", 0)]
    produce_tasks(transport, hub, produced)
    with caplog.at_level(logging.WARNING, logger="durafka.worker"):
        running = start_worker(_counting_registry(runs), worker_id="solo", exclusive_id=True)
        read_results(transport, hub, 1)  # up and committing
        # The epoch bump a timed-out transaction gets, done the way a client can.
        bump = transport.transactional_producer(f"{hub}.worker.solo")
        bump.init_transactions()
        bump.close()

        def fenced_and_went_on() -> bool:
            batch = [task(f"f{len(produced) + n}", "work", len(produced) + n) for n in range(4)]
            produce_tasks(transport, hub, batch)
            produced.extend(batch)
            assert running.thread.is_alive(), running.error
            return any("was fenced" in r.getMessage() for r in caplog.records)

        wait_until(fenced_and_went_on, interval=0.2, what="the worker to meet the fence")
        results = read_results(transport, hub, len(produced))
    assert {key[0] for key in results} == {t.instance_id for t in produced}
    assert_all_committed(transport, hub)
    assert running.error is None and running.thread.is_alive()


def test_a_newer_worker_with_the_same_id_fences_the_older(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    registry = _counting_registry(runs)
    produce_tasks(transport, hub, [task("w0", "work", 0)])
    older = start_worker(registry, worker_id="same")
    read_results(transport, hub, 1)  # the older one is up and committing
    newer = start_worker(registry, worker_id="same")

    produced = [task("w0", "work", 0)]

    def older_stopped() -> bool:
        # Keep feeding every partition until the older worker commits again and fails.
        batch = [task(f"w{len(produced) + n}", "work", len(produced) + n) for n in range(4)]
        produce_tasks(transport, hub, batch)
        produced.extend(batch)
        return not older.thread.is_alive()

    wait_until(older_stopped, interval=0.2, what="the fenced worker to stop")
    assert isinstance(older.error, TransactionError) and older.error.fatal
    results = read_results(transport, hub, len(produced))
    assert {key[0] for key in results} == {t.instance_id for t in produced}
    assert_all_committed(transport, hub)
    assert newer.error is None and newer.thread.is_alive()


@pytest.mark.kafka
@pytest.mark.parametrize("bootstrap", ["kafka"], indirect=True)
def test_a_worker_stuck_in_send_offsets_goes_on_with_a_new_producer(
    transport: Transport,
    hub: str,
    start_worker: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: after the broker was unreachable, librdkafka's send_offsets_to_transaction
    # could block for good, and the worker waited in it until the watchdog ended the
    # process (soak seeds 312794, 397900). Now the call is given up past its bound, with
    # its producer; the worker aborts, replaces the producer and runs the tasks again.
    short_send_offsets_bound(monkeypatch)
    runs: Counter[str] = Counter()
    blocking: list[BlockingSendOffsets] = []

    class FirstProducerBlocks:
        def __getattr__(self, name: str) -> Any:
            return getattr(transport, name)

        def transactional_producer(self, transactional_id: str, **config: Any) -> Any:
            producer = transport.transactional_producer(transactional_id, **config)
            if not blocking:
                blocking.append(BlockingSendOffsets.wrap(producer))
            return producer

    a_broker_went_down(transport)
    produced = [task(f"s{n}", "work", n) for n in range(4)]
    produce_tasks(transport, hub, produced)
    try:
        running = start_worker(_counting_registry(runs), via=FirstProducerBlocks())
        results = read_results(transport, hub, len(produced))
    finally:
        for b in blocking:
            b.release.set()
    assert {key[0] for key in results} == {t.instance_id for t in produced}
    assert_all_committed(transport, hub)
    assert blocking and len(blocking[0].threads) == 1
    assert running.error is None and running.thread.is_alive()
