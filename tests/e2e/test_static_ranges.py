"""Static partition ranges are fenced per partition, against each other and group mode.

The production layout runs one processor pod per partition range. Whatever
ranges or modes two live processes were started with, at most one may commit
for a partition (issue 10, hole 3): each test checks it where the outside
world sees it: every instance has exactly one terminal status, and every
activity task was committed once per scheduled step.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.client import Client
from durafka.codec.records import decode_activity_task, decode_status
from durafka.errors import PartitionOwnershipError
from durafka.partitioning import partition_for
from durafka.processor import Processor
from durafka.processor import loop as processor_loop
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from tests.e2e import apps
from tests.e2e.conftest import make_app
from tests.features.helpers import read_topic
from tests.support.waiting import wait_until

PARTITIONS = 4


class Role(threading.Thread):
    """Runs ``target(stop)`` on a thread; keeps what it raised."""

    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)


HubApps = Callable[..., durafka.App]


@pytest.fixture
def hub_apps(bootstrap: str, tmp_path: Path) -> Iterator[HubApps]:
    """Apps on one fresh hub, each with a state dir of its own (another pod).

    ``hub_apps(name, **settings)``: the settings override the defaults for that pod.
    """
    hub = f"t{uuid.uuid4().hex[:10]}"
    made: list[durafka.App] = []

    def factory(name: str, **settings: Any) -> durafka.App:
        app = make_app(bootstrap, hub, tmp_path / name, partitions=PARTITIONS, **settings)
        app.ensure_topics()
        made.append(app)
        return app

    yield factory
    for app in made:
        app.close()


def start_sequences(client: Client, first: int, n: int) -> dict[str, int]:
    """Start ``sequence(x)`` for x in first..first+n-1; instance id -> expected output.

    Consecutive ids are spread so that every partition gets some.
    """
    expected: dict[str, int] = {}
    per_partition = -(-n // PARTITIONS)
    counts = dict.fromkeys(range(PARTITIONS), 0)
    x = first
    while len(expected) < n:
        iid = f"s-{x}"
        p = partition_for(iid.encode(), PARTITIONS)
        if counts[p] < per_partition:
            counts[p] += 1
            expected[client.start_new(apps.sequence, x, instance_id=iid)] = x + 5
        x += 1
    return expected


def assert_exactly_once(app: durafka.App, expected: dict[str, int]) -> None:
    """One terminal status per instance, with its output; one activity task per step."""
    topics = HubTopics(app.settings.task_hub)
    terminal: dict[str, list[bytes | None]] = {}
    for _, value in read_topic(app.transport, topics.status):
        if value is None:
            continue
        status = decode_status(value)
        if status.runtime_status.is_terminal:
            terminal.setdefault(status.instance_id, []).append(status.serialized_output)
    for iid, output in expected.items():
        assert terminal.get(iid) == [str(output).encode()], f"{iid}: {terminal.get(iid)}"
    tasks = Counter(
        (task.instance_id, task.seq)
        for _, value in read_topic(app.transport, topics.activities)
        if value is not None
        for task in [decode_activity_task(value)]
    )
    twice = {k: n for k, n in tasks.items() if n > 1}
    assert not twice, f"activity tasks scheduled more than once: {twice}"


@dataclass
class StaticRange:
    """A static processor of every partition and a worker running, a client, instances
    started: the setup of the fence tests."""

    pod: durafka.App
    workers: durafka.App
    processor: Processor
    role: Role
    worker: Role
    client: Client
    expected: dict[str, int]

    def finish(self, *roles: Role) -> None:
        """Stop ``roles`` (default: the processor's and the worker's), then check that
        none failed and that every instance completed exactly once."""
        for role in roles or (self.role, self.worker):
            role.stop()
            assert role.error is None, role.error
        assert_exactly_once(self.workers, self.expected)
        self.client.close()


def start_static_range(
    hub_apps: HubApps,
    instances: int,
    processor: Callable[[durafka.App], Processor] | None = None,
    **pod_settings: Any,
) -> StaticRange:
    """Run a static processor of every partition (``processor(pod)`` makes it, if given)
    and a worker on threads, and start ``instances`` sequences."""
    pod, workers = hub_apps("s", **pod_settings), hub_apps("w")
    static = processor(pod) if processor else pod.processor(list(range(PARTITIONS)))
    worker = Role("worker", workers.worker().run)
    role = Role("static", static.run)
    worker.start()
    role.start()
    client = workers.sync_client()
    expected = start_sequences(client, 0, instances)
    return StaticRange(pod, workers, static, role, worker, client, expected)


def all_completed(client: Client, ids: Iterable[str]) -> bool:
    view = client.status_view
    for iid in ids:
        st = view.get(iid)
        if st is None or st.runtime_status is not RuntimeStatus.COMPLETED:
            return False
    return True


def test_overlapping_static_ranges_never_both_commit_a_partition(
    hub_apps: HubApps, caplog: pytest.LogCaptureFixture
) -> None:
    """Ranges 0-2 and 1-3: the later one fences the earlier on 1 and 2, which gives them up.

    (Before, each range had one transactional.id, ``p0-2`` and ``p1-3``: both committed
    partitions 1 and 2, every step ran twice and two processors wrote one changelog.)
    """
    caplog.set_level(logging.ERROR, logger="durafka.processor")
    pod_a, pod_b, workers = hub_apps("a"), hub_apps("b"), hub_apps("w")
    first = pod_a.processor([0, 1, 2])
    worker = Role("worker", workers.worker().run)
    role_a = Role("a", first.run)
    worker.start()
    role_a.start()
    client = workers.sync_client()
    expected = start_sequences(client, 0, 40)
    on_a = [iid for iid in expected if partition_for(iid.encode(), PARTITIONS) in (0, 1, 2)]
    wait_until(lambda: all_completed(client, on_a[:10]), timeout=60, what="first steps")
    second = pod_b.processor([1, 2, 3])
    role_b = Role("b", second.run)
    role_b.start()
    wait_until(lambda: second.owned_partitions == [1, 2, 3], timeout=60, what="the second range")
    expected |= start_sequences(client, 1000, 40)
    wait_until(lambda: all_completed(client, expected), timeout=120, what="every instance")
    # The first gives up 1 and 2 at its first transaction on them after the second started.
    wait_until(lambda: first.owned_partitions == [0], timeout=60, what="fenced partitions")
    assert second.owned_partitions == [1, 2, 3]
    gave_up = [r.getMessage() for r in caplog.records if "gave up partitions" in r.getMessage()]
    assert gave_up, "the fenced processor did not say which partitions it gave up"
    for role in (role_a, role_b, worker):
        role.stop()
        assert role.error is None, role.error
    assert_exactly_once(workers, expected)
    client.close()


def test_a_partition_fenced_by_the_coordinator_is_claimed_again(
    hub_apps: HubApps,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A static range's partition fenced with nobody else claiming it is taken back.

    The coordinator bumps a ``transactional.id``'s epoch when it aborts a transaction
    that outlived ``transaction_timeout_ms``: a broker down for longer fenced the
    partitions it left mid-transaction (the soak with broker kills in its static
    phase). Before, the range gave them up for good and their instances waited
    until the process restarted.
    """
    monkeypatch.setattr(processor_loop, "COVERAGE_CHECK_INTERVAL_S", 1.0)
    caplog.set_level(logging.WARNING, logger="durafka.processor")
    run = start_static_range(hub_apps, 20)
    client = run.client
    wait_until(lambda: all_completed(client, run.expected), timeout=60, what="first instances")
    # An epoch bump between transactions, done the way a client can.
    bump = run.pod.transport.transactional_producer(
        HubTopics(run.pod.settings.task_hub).partition_transactional_id(0)
    )
    bump.init_transactions()
    bump.close()
    run.expected |= start_sequences(client, 1000, 20)
    wait_until(lambda: all_completed(client, run.expected), timeout=120, what="every instance")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("gave up partitions [0]") for m in messages), messages
    assert any(m.startswith("claiming partitions [0]") for m in messages), messages
    assert run.processor.owned_partitions == list(range(PARTITIONS))
    run.finish()


class StallingProducer:
    """A transactional producer whose commit, once armed, first waits ``stall_s``."""

    def __init__(self, inner: Any, stall_s: float) -> None:
        self._inner = inner
        self._stall_s = stall_s
        self.armed = threading.Event()
        self.stalled = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        if self.armed.is_set() and not self.stalled.is_set():
            self.stalled.set()
            time.sleep(self._stall_s)  # a broker frozen that long, the transaction open
        self._inner.commit_transaction(timeout)


class StallingTransport:
    """Wraps a transport: the producers of static partition 0 are :class:`StallingProducer`."""

    def __init__(self, inner: Any, stall_s: float) -> None:
        self._inner = inner
        self._stall_s = stall_s
        self.producers: list[StallingProducer] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transactional_producer(self, transactional_id: str, **config: Any) -> Any:
        producer = self._inner.transactional_producer(transactional_id, **config)
        if not transactional_id.endswith(".processor.p0"):
            return producer
        stalling = StallingProducer(producer, self._stall_s)
        self.producers.append(stalling)
        return stalling


def test_a_transaction_aborted_by_the_coordinator_takes_its_partition_back_at_once(
    hub_apps: HubApps, caplog: pytest.LogCaptureFixture
) -> None:
    """A static range's transaction open past ``transaction_timeout_ms`` (the broker
    frozen that long): the coordinator aborts it and bumps the epoch, which fences the
    producer with the error a claimant's would. The partition is taken back with a new
    producer at once; before, it was given up until the coverage check, a minute or two
    later, found nobody committing it.
    """
    caplog.set_level(logging.WARNING, logger="durafka.processor")
    stalling: list[StallingTransport] = []

    def processor(pod: durafka.App) -> Processor:
        # 5 s against a timeout of 1 s: the dev broker looks for expired transactions
        # every second (transaction.abort.timed.out.transaction.cleanup.interval.ms).
        transport = StallingTransport(pod.transport, stall_s=5.0)
        stalling.append(transport)
        return Processor(
            pod.settings,
            pod.registry,
            transport,
            pod.store_factory,
            partitions=list(range(PARTITIONS)),
        )

    run = start_static_range(hub_apps, 20, processor, transaction_timeout_ms=1000)
    client = run.client
    wait_until(lambda: all_completed(client, run.expected), timeout=60, what="first instances")
    (first,) = stalling[0].producers
    first.armed.set()
    run.expected |= start_sequences(client, 1000, 20)
    # Well inside the minute of the coverage check (not shortened here).
    wait_until(lambda: all_completed(client, run.expected), timeout=30, what="every instance")
    assert first.stalled.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert any("taking the partitions back" in m for m in messages), messages
    assert not any(m.startswith("gave up partitions") for m in messages), messages
    assert run.processor.owned_partitions == list(range(PARTITIONS))
    assert len(stalling[0].producers) == 2  # the fenced one, and its replacement
    run.finish()


def test_a_static_processor_refuses_partitions_that_group_members_own(
    hub_apps: HubApps,
) -> None:
    """Static ranges and group mode on one hub: the static processor names the clash."""
    group_pod, static_pod = hub_apps("g"), hub_apps("s")
    group = group_pod.processor()
    role = Role("group", group.run)
    role.start()
    wait_until(lambda: group.owned_partitions == list(range(PARTITIONS)), timeout=60)
    static = static_pod.processor([0, 1])
    with pytest.raises(PartitionOwnershipError, match=r"static partitions \[0, 1\].*owns \[0, 1"):
        static.start()
    static.close()
    role.stop()
    assert role.error is None, role.error


def test_a_group_processor_fences_a_static_range_that_claims_its_partitions(
    hub_apps: HubApps,
) -> None:
    """A group-mode processor taking the partitions of a running static one: the static
    one is fenced on each, gives them up and stops; every instance completes once."""
    run = start_static_range(hub_apps, 30)
    client = run.client
    first_steps = list(run.expected)[:5]
    wait_until(lambda: all_completed(client, first_steps), timeout=60, what="first steps")
    group = hub_apps("g").processor()
    role_g = Role("group", group.run)
    role_g.start()
    wait_until(lambda: group.owned_partitions == list(range(PARTITIONS)), timeout=60)
    run.expected |= start_sequences(client, 1000, 30)
    wait_until(lambda: all_completed(client, run.expected), timeout=120, what="every instance")
    # Fenced on each partition at its next transaction there, it has nothing left.
    run.role.join(60)
    assert isinstance(run.role.error, PartitionOwnershipError), run.role.error
    run.finish(role_g, run.worker)
