"""Exactly-once on the less common paths of the processor's commit (issue 10).

Each test drives processors by hand (``run_once``) on a ``memory://`` broker, so
the moment a fault lands is exact, and checks what the outside world sees: the
statuses and records committed to the hub's topics.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka import OrchestrationContext
from durafka.client import Client
from durafka.codec.records import decode_message, decode_status
from durafka.errors import CommitOutcomeUnknownError
from durafka.processor import Processor
from durafka.registry import Registry
from durafka.state.memory import MemoryStoreFactory
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport import TopicPartition
from durafka.transport.memory import MemoryBroker, MemoryTransport
from tests.support.apps import make_app

registry = Registry()


def double(x: int) -> int:
    """A trivial activity."""
    return 2 * x


async def doubler(ctx: OrchestrationContext, x: int) -> int:
    """One activity, its result as output."""
    return int(await ctx.call_activity(double, x))


registry.add_activity(double)
registry.add_orchestration(doubler)

PARTITIONS = 2


@pytest.fixture
def app(tmp_path: Path) -> Iterator[durafka.App]:
    """An app on a private memory broker, 2 partitions, no worker (results come by hand)."""
    app = make_app(
        f"memory://{uuid.uuid4().hex[:8]}",
        f"t{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        registry,
        partitions=PARTITIONS,
        local_activities=False,
    )
    app.ensure_topics()
    yield app
    app.close()


def committed_records(app: durafka.App, topic: str) -> list[tuple[str, object]]:
    """Every committed record of ``topic``, decoded (read_committed, from the beginning)."""
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    consumer = transport.consumer(None)
    n = transport.partition_count(topic)
    consumer.assign({TopicPartition(topic, p): 0 for p in range(n)})
    out: list[tuple[str, object]] = []
    while True:
        records = consumer.poll_batch(10_000, 0.0)
        if not records:
            break
        for r in records:
            value = r.value()
            if value is None:
                continue
            if topic.endswith(".status"):
                st = decode_status(value)
                out.append((st.instance_id, st.runtime_status))
            else:
                iid, event = decode_message(value)
                out.append((iid, event.kind))
    consumer.close()
    return out


def ids_on_each_partition(n: int) -> dict[int, list[str]]:
    """``n`` instance ids for each partition."""
    from durafka.partitioning import partition_for

    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(v) < n for v in found.values()):
        iid = f"i-{i}"
        p = partition_for(iid.encode(), PARTITIONS)
        if len(found[p]) < n:
            found[p].append(iid)
        i += 1
    return found


def test_records_of_a_partition_revoked_during_the_poll_are_not_committed(
    app: durafka.App,
) -> None:
    """A rebalance inside the poll revokes a partition whose records the batch holds.

    The processor must not commit their offsets: the new owner reads them from the
    committed offset and starts every instance. (Before the fix the offsets went into
    the transaction and the new owner started after them: the starts were lost.)
    """
    first = app.processor()
    first.start()
    run_until(first, lambda: len(first.owned_partitions) == PARTITIONS)
    client = Client(app.settings, app.registry, app.transport)
    ids = ids_on_each_partition(3)
    for p_ids in ids.values():
        for iid in p_ids:
            client.start_new(doubler, 1, instance_id=iid)
    # A second processor joins: the next poll of the first returns the starts of both
    # partitions and, inside the same poll, gives one partition away.
    second = app.processor()
    second.start()
    first.run_once(poll_timeout=0.01)
    assert len(first.owned_partitions) == 1, "the rebalance should have moved one partition"
    for _ in range(20):
        second.run_once(poll_timeout=0.01)
        first.run_once(poll_timeout=0.01)
    # Every instance was started by whoever owns its partition: its task was scheduled.
    topics = HubTopics(app.settings.task_hub)
    statuses = committed_records(app, topics.status)
    running = {iid for iid, st in statuses if st is RuntimeStatus.RUNNING}
    every_id = {iid for p_ids in ids.values() for iid in p_ids}
    assert running == every_id, f"instances never started: {sorted(every_id - running)}"
    for proc in (first, second):
        proc.close()
    client.close()
    MemoryBroker.reset()


async def napper(ctx: OrchestrationContext, seconds: int) -> str:
    """Sleeps on a durable timer, then completes."""
    await ctx.sleep(timedelta(seconds=seconds))
    return "woke"


registry.add_orchestration(napper)


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def run_until(proc: Processor, done: Callable[[], bool], rounds: int = 200) -> None:
    for _ in range(rounds):
        if done():
            return
        proc.run_once(poll_timeout=0.01)
    raise AssertionError("the processor did not get there")


def terminal_statuses(app: durafka.App, iid: str) -> list[RuntimeStatus]:
    topics = HubTopics(app.settings.task_hub)
    return [
        st
        for i, st in committed_records(app, topics.status)
        if i == iid and st in (RuntimeStatus.COMPLETED, RuntimeStatus.FAILED)
    ]


def test_a_zombie_cannot_commit_a_batch_of_due_timers(app: durafka.App) -> None:
    """A processor paused between taking due timers and committing them, whose group
    session expired meanwhile, must not commit: the new owner fired the timers already.

    (Before the fix a batch with only timers sent no offsets, hence no group metadata,
    and the zombie's commit went through: the instance completed twice.)
    """
    clock = FakeClock()
    zombie = app.processor(clock=clock)
    zombie.start()
    run_until(zombie, lambda: len(zombie.owned_partitions) == PARTITIONS)
    client = Client(app.settings, app.registry, app.transport)
    client.start_new(napper, 5, instance_id="z")
    run_until(zombie, lambda: zombie.next_timer_ms() is not None)
    clock.now += 10
    # Another machine: its own state, restored from the changelog.
    successor = Processor(
        app.settings, app.registry, app.transport, MemoryStoreFactory(), clock=clock
    )
    successor.start()
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    original_commit = zombie._commit

    def paused_commit(batch: Any) -> None:
        # The zombie "pauses" here: its session expires, the successor takes over and
        # fires the timer; then the zombie wakes up and commits.
        member = zombie._consumer.member_id  # type: ignore[attr-defined]
        transport.broker.expire_member(app.settings.task_hub + ".processors", member)
        run_until(successor, lambda: terminal_statuses(app, "z") != [])
        original_commit(batch)

    zombie._commit = paused_commit  # type: ignore[method-assign]
    zombie.run_once(poll_timeout=0.0)
    zombie._commit = original_commit  # type: ignore[method-assign]
    for _ in range(10):
        zombie.run_once(poll_timeout=0.01)
        successor.run_once(poll_timeout=0.01)
    assert terminal_statuses(app, "z") == [RuntimeStatus.COMPLETED]
    for proc in (zombie, successor):
        proc.close()
    client.close()


class UnknownCommitProducer:
    """A transactional producer whose commit's outcome is unknown to the caller.

    ``committed_first``: the first ``commit_transaction`` commits, then reports the
    outcome unknown (as librdkafka does when the reply is lost); calling it again
    returns success, as librdkafka's resumed commit does. Otherwise every commit
    reports an unknown outcome without committing, until the producer is replaced.
    """

    def __init__(self, inner: Any, committed_first: bool, calls: list[str]) -> None:
        self._inner = inner
        self._committed_first = committed_first
        self._calls = calls
        self._resolved = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def begin_transaction(self) -> None:
        self._resolved = False
        self._inner.begin_transaction()

    def commit_transaction(self, timeout: float = 30.0) -> None:
        self._calls.append("commit")
        if self._resolved:
            return
        if self._committed_first:
            self._inner.commit_transaction(timeout)
            self._resolved = True
        raise CommitOutcomeUnknownError("no reply from the transaction coordinator (test)")


class UnknownCommitTransport:
    """Wraps a transport: the first transactional producer of each test has unknown commits."""

    def __init__(self, inner: MemoryTransport, committed_first: bool) -> None:
        self._inner = inner
        self._committed_first = committed_first
        self.calls: list[str] = []
        self.faulty = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transactional_producer(self, transactional_id: str, **config: Any) -> Any:
        producer = self._inner.transactional_producer(transactional_id, **config)
        if self.faulty and ".processor.p" not in transactional_id:
            self.faulty = False
            return UnknownCommitProducer(producer, self._committed_first, self.calls)
        return producer


def activity_tasks_of(app: durafka.App, iid: str) -> int:
    """How many activity tasks were committed for instance ``iid``."""
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    topic = HubTopics(app.settings.task_hub).activities
    consumer = transport.consumer(None)
    n = transport.partition_count(topic)
    consumer.assign({TopicPartition(topic, p): 0 for p in range(n)})
    count = 0
    while records := consumer.poll_batch(10_000, 0.0):
        count += sum(1 for r in records if r.key() == iid.encode())
    consumer.close()
    return count


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_a_commit_with_an_unknown_outcome_is_never_replayed_as_aborted(
    app: durafka.App, committed: bool
) -> None:
    """A commit whose reply is lost may have committed: the batch must take effect once.

    Committed: resuming the commit learns it went through (before the fix the batch was
    aborted and replayed on the old store: two activity tasks, two RUNNING statuses).
    Not committed, and the outcome never becomes known within ``commit_timeout_ms``: the
    producer is recreated, the partition restored from the changelog and read again from
    the committed offset; the start is processed once.
    """
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    app.settings.commit_timeout_ms = 200
    faulty = UnknownCommitTransport(transport, committed_first=committed)
    proc = Processor(app.settings, app.registry, faulty, app.store_factory)  # type: ignore[arg-type]
    proc.start()
    client = Client(app.settings, app.registry, transport)
    run_until(proc, lambda: len(proc.owned_partitions) == PARTITIONS)
    client.start_new(doubler, 21, instance_id="u")
    run_until(proc, lambda: activity_tasks_of(app, "u") > 0 and proc.is_idle, rounds=400)
    for _ in range(10):
        proc.run_once(poll_timeout=0.01)
    assert faulty.calls.count("commit") >= 2, "the commit was not resumed"
    assert activity_tasks_of(app, "u") == 1
    topics = HubTopics(app.settings.task_hub)
    running = [st for i, st in committed_records(app, topics.status) if i == "u"]
    assert running == [RuntimeStatus.RUNNING]
    proc.close()
    client.close()
