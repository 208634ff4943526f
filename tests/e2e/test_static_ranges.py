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
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import durafka
from durafka.client import Client
from durafka.codec.records import decode_activity_task, decode_status
from durafka.errors import PartitionOwnershipError
from durafka.partitioning import partition_for
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


@pytest.fixture
def hub_apps(bootstrap: str, tmp_path: Path) -> Iterator[Callable[[str], durafka.App]]:
    """Apps on one fresh hub, each with a state dir of its own (another pod)."""
    hub = f"t{uuid.uuid4().hex[:10]}"
    made: list[durafka.App] = []

    def factory(name: str) -> durafka.App:
        app = make_app(bootstrap, hub, tmp_path / name, partitions=PARTITIONS)
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


def all_completed(client: Client, ids: Iterator[str] | list[str]) -> bool:
    view = client.status_view
    for iid in ids:
        st = view.get(iid)
        if st is None or st.runtime_status is not RuntimeStatus.COMPLETED:
            return False
    return True


def test_overlapping_static_ranges_never_both_commit_a_partition(
    hub_apps: Callable[[str], durafka.App], caplog: pytest.LogCaptureFixture
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
    hub_apps: Callable[[str], durafka.App],
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
    pod, workers = hub_apps("s"), hub_apps("w")
    static = pod.processor(list(range(PARTITIONS)))
    worker = Role("worker", workers.worker().run)
    role = Role("static", static.run)
    worker.start()
    role.start()
    client = workers.sync_client()
    expected = start_sequences(client, 0, 20)
    wait_until(lambda: all_completed(client, expected), timeout=60, what="first instances")
    # The coordinator's epoch bump, done the way a client can.
    bump = pod.transport.transactional_producer(
        HubTopics(pod.settings.task_hub).partition_transactional_id(0)
    )
    bump.init_transactions()
    bump.close()
    expected |= start_sequences(client, 1000, 20)
    wait_until(lambda: all_completed(client, expected), timeout=120, what="every instance")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("gave up partitions [0]") for m in messages), messages
    assert any(m.startswith("claiming partitions [0]") for m in messages), messages
    assert static.owned_partitions == list(range(PARTITIONS))
    for r in (role, worker):
        r.stop()
        assert r.error is None, r.error
    assert_exactly_once(workers, expected)
    client.close()


def test_a_static_processor_refuses_partitions_that_group_members_own(
    hub_apps: Callable[[str], durafka.App],
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
    hub_apps: Callable[[str], durafka.App],
) -> None:
    """A group-mode processor taking the partitions of a running static one: the static
    one is fenced on each, gives them up and stops; every instance completes once."""
    static_pod, group_pod, workers = hub_apps("s"), hub_apps("g"), hub_apps("w")
    static = static_pod.processor(list(range(PARTITIONS)))
    worker = Role("worker", workers.worker().run)
    role_s = Role("static", static.run)
    worker.start()
    role_s.start()
    client = workers.sync_client()
    expected = start_sequences(client, 0, 30)
    wait_until(lambda: all_completed(client, list(expected)[:5]), timeout=60, what="first steps")
    group = group_pod.processor()
    role_g = Role("group", group.run)
    role_g.start()
    wait_until(lambda: group.owned_partitions == list(range(PARTITIONS)), timeout=60)
    expected |= start_sequences(client, 1000, 30)
    wait_until(lambda: all_completed(client, expected), timeout=120, what="every instance")
    # Fenced on each partition at its next transaction there, it has nothing left.
    role_s.join(60)
    assert isinstance(role_s.error, PartitionOwnershipError), role_s.error
    for role in (role_g, worker):
        role.stop()
        assert role.error is None, role.error
    assert_exactly_once(workers, expected)
    client.close()
