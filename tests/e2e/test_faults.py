"""Fault injection against the real broker: crashes, lost state, rebalances, failed commits.

Every test checks the exactly-once promise where it is visible to the outside
world: the ``H.status`` topic, read with a read_committed consumer from the
beginning, holds exactly one terminal record per instance, with the right
output. Activities may run more than once (at-least-once); the ``crash_marker``
activity writes one line per run to a file per worker process, so the tests
can see every input ran.

Roles run as real processes (``python -m durafka.cli ...``) where the fault is a
process dying (``kill -9``) or a group member joining and leaving; the others
run in this process, where patching is possible.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import IsolationLevel
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

import durafka
from durafka.client import Client
from durafka.codec.records import decode_status
from durafka.errors import TransactionError
from durafka.hosting import Runner
from durafka.partitioning import partition_for
from durafka.processor.instances import load_instance
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import HistoryEvent
from durafka.state.transaction import StoreTransaction
from durafka.status import TERMINAL_STATUSES, OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics
from tests.e2e import apps
from tests.e2e.conftest import make_app
from tests.support.kafka import admin_client
from tests.support.processes import RoleLauncher, RoleProcess, hub_env
from tests.support.topics import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = "tests.e2e.apps:app"
PARTITIONS = 4
#: Lets a killed group member's partitions move within seconds, not the default 45 s.
#: Consumer settings: producers given them would warn (CONFWARN) on every start.
FAST_GROUP = json.dumps(
    {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "1000"}
)


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def fault_app(kafka_bootstrap: str, hub: str, tmp_path: Path) -> Iterator[durafka.App]:
    """The test app on a fresh task hub, its topics (4 partitions) created."""
    app = make_app(kafka_bootstrap, hub, tmp_path / "state", transaction_timeout_ms=10_000)
    app.ensure_topics()
    yield app
    app.close()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """Where ``crash_marker`` records its runs (one file per worker process)."""
    path = tmp_path / "markers"
    path.mkdir()
    return path


def role_env(app: durafka.App, state_dir: Path, markers: Path | None = None) -> dict[str, str]:
    """The environment of a child role of ``app``'s task hub."""
    extra = {"DURAFKA_CLIENT_CONFIG": FAST_GROUP}
    if markers is not None:
        extra["DURAFKA_TEST_MARKER_DIR"] = str(markers)
    s = app.settings
    return hub_env(
        s.bootstrap_servers,
        s.task_hub,
        state_dir,
        partitions=s.partitions,
        transaction_timeout_ms=s.transaction_timeout_ms,
        **extra,
    )


def start_crash_workload(client: Client, n: int, prefix: str = "c") -> dict[str, int]:
    """Start ``crash_workload(x)`` for x in 0..n-1; returns instance id -> expected output."""
    expected: dict[str, int] = {}
    for x in range(n):
        iid = client.start_new(apps.crash_workload, x, instance_id=f"{prefix}-{x}")
        expected[iid] = x + 1
    return expected


def count_completed(client: Client, ids: Iterable[str]) -> int:
    """How many of ``ids`` the client's status view shows Completed."""
    view = client.status_view
    n = 0
    for iid in ids:
        st = view.get(iid)
        if st is not None and st.runtime_status is RuntimeStatus.COMPLETED:
            n += 1
    return n


def wait_completed(
    client: Client,
    ids: Iterable[str],
    at_least: int,
    *,
    alive: Iterable[RoleProcess] = (),
    timeout: float = 120.0,
) -> int:
    """Wait until ``at_least`` of ``ids`` are Completed; fail early if a role died."""
    ids = list(ids)
    watched = list(alive)
    deadline = time.monotonic() + timeout
    while True:
        done = count_completed(client, ids)
        if done >= at_least:
            return done
        for proc in watched:
            proc.assert_alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"only {done} of {len(ids)} instances completed within {timeout}s "
                f"(waited for {at_least})"
            )
        time.sleep(0.02)


def read_status_topic(app: durafka.App, timeout: float = 60.0) -> list[OrchestrationStatus]:
    """Every committed record of ``H.status``, from the beginning to the current end.

    The consumer is read_committed: records of aborted transactions (a failed
    commit, a killed processor) never appear, and the end is reached only once
    no transaction is open any more.
    """
    topic = HubTopics(app.settings.task_hub).status
    out: list[OrchestrationStatus] = []
    for key, value in read_topic(app.transport, topic, timeout=timeout):
        assert value is not None, f"a tombstone on {topic} for {key!r}"
        out.append(decode_status(value))
    return out


def assert_completed_exactly_once(app: durafka.App, expected: dict[str, int]) -> None:
    """``H.status`` holds exactly one terminal record per instance: Completed, right output.

    Args:
        app: the app whose task hub is checked.
        expected: every ``crash_workload`` instance id with its expected output.
    """
    by_instance: dict[str, list[OrchestrationStatus]] = {}
    for st in read_status_topic(app):
        by_instance.setdefault(st.instance_id, []).append(st)
    assert set(by_instance) == set(expected), "status records for unexpected or missing instances"
    problems: list[str] = []
    for iid, output in sorted(expected.items()):
        records = by_instance[iid]
        terminal = [st for st in records if st.runtime_status in TERMINAL_STATUSES]
        seen = [st.runtime_status.value for st in records]
        if len(terminal) != 1:
            problems.append(f"{iid}: {len(terminal)} terminal records ({seen})")
            continue
        st = terminal[0]
        if st.runtime_status is not RuntimeStatus.COMPLETED:
            problems.append(f"{iid}: ended {st.runtime_status.value}: {st.failure_details}")
        elif json.loads(st.serialized_output or b"null") != output:
            problems.append(f"{iid}: output {st.serialized_output!r}, expected {output}")
        elif seen != ["RUNNING", "COMPLETED"]:
            # crash_workload sets no custom status: one record when it starts, one
            # when it ends. More means a step was applied twice (e.g. its start).
            problems.append(f"{iid}: status records {seen}, expected RUNNING, COMPLETED")
    assert not problems, f"{len(problems)} instances broke exactly-once:\n" + "\n".join(
        problems[:20]
    )


def marker_runs(markers: Path) -> dict[str, Counter[int]]:
    """Runs of ``crash_marker`` per worker process (file name) and input."""
    return {
        f.name: Counter(int(line) for line in f.read_text().split())
        for f in sorted(markers.glob("*.log"))
    }


def assert_every_input_ran(markers: Path, n: int) -> Counter[int]:
    """Every x in 0..n-1 ran ``crash_marker`` at least once; returns the total runs per x."""
    total: Counter[int] = Counter()
    for runs in marker_runs(markers).values():
        total.update(runs)
    missing = sorted(set(range(n)) - set(total))
    assert not missing, f"crash_marker never ran for {len(missing)} inputs: {missing[:20]}"
    assert set(total) == set(range(n)), f"unexpected inputs ran: {set(total) - set(range(n))}"
    return total


def wait_ready(*procs: RoleProcess) -> None:
    """Wait until each role owns partitions (a processor: restored and ready)."""
    for proc in procs:
        proc.wait_for_log(r"partition \d ready|worker \w+ assigned \S+activities")


class Starter(threading.Thread):
    """Starts ``crash_workload(0), (1), ...`` at a steady rate until told to finish.

    Started all at once, a few hundred instances finish within one or two
    batches; a steady stream keeps work in flight whenever the fault happens,
    and goes on while the system recovers from it.
    """

    def __init__(
        self, client: Client, per_second: float, prefix: str = "s", first: int = 0
    ) -> None:
        super().__init__(name="instance-starter", daemon=True)
        self.client = client
        self.prefix = prefix
        #: The input of the first instance; later ones count up from it.
        self.first = first
        self.interval = 1.0 / per_second
        #: instance id -> expected output, filled as instances are started.
        self.expected: dict[str, int] = {}
        self.error: BaseException | None = None
        self._finish = threading.Event()

    def run(self) -> None:
        try:
            began = time.monotonic()
            x = self.first
            while not self._finish.is_set():
                iid = self.client.start_new(
                    apps.crash_workload, x, instance_id=f"{self.prefix}-{x}"
                )
                self.expected[iid] = x + 1
                x += 1
                due = began + (x - self.first) * self.interval
                self._finish.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # reported in the test's thread
            self.error = exc

    def started(self) -> int:
        """How many instances were started so far."""
        return len(self.expected)

    def _check(self) -> None:
        assert self.error is None, f"starting instances failed: {self.error!r}"
        assert self.is_alive(), f"the starter stopped after {self.started()} instances"

    def wait_started(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` instances are started."""
        deadline = time.monotonic() + timeout
        while self.started() < count:
            self._check()
            assert time.monotonic() < deadline, f"{self.started()} of {count} started in time"
            time.sleep(0.02)

    def wait_completed(
        self, count: int, *, alive: Iterable[RoleProcess] = (), timeout: float = 60.0
    ) -> None:
        """Wait until ``count`` of the instances started so far are Completed."""
        watched = list(alive)
        deadline = time.monotonic() + timeout
        while count_completed(self.client, list(self.expected)) < count:
            self._check()
            for proc in watched:
                proc.assert_alive()
            assert time.monotonic() < deadline, f"{count} instances did not complete in time"
            time.sleep(0.02)

    def finish(self, timeout: float = 30.0) -> dict[str, int]:
        """Stop starting; every instance id started, with its expected output."""
        self._finish.set()
        self.join(timeout)
        assert not self.is_alive(), f"the starter did not stop within {timeout}s"
        assert self.error is None, f"starting instances failed: {self.error!r}"
        return self.expected


# -- 1. a processor killed mid-run ----------------------------------------------------------


def test_processor_kill_9_mid_run_completes_every_instance_exactly_once(
    fault_app: durafka.App, roles: RoleLauncher, markers: Path, tmp_path: Path
) -> None:
    n = 1000
    # Smaller batches than the default 500: completions come in many small steps,
    # and transactions follow each other closely.
    env = {**role_env(fault_app, tmp_path / "state", markers), "DURAFKA_BATCH_SIZE": "100"}
    with fault_app.sync_client() as client:
        # Started before any processor runs: all 1,000 are in flight together.
        expected = start_crash_workload(client, n)
        worker = roles.start("worker", APP, env, name="worker")
        first = roles.start("processor", APP, env, name="processor-killed")
        # The 1,000 may all finish within a few batches; a steady stream on top
        # keeps instances in flight whenever the kill lands, however fast that is.
        starter = Starter(client, per_second=200.0, first=n)
        starter.start()
        wait_completed(client, expected, n // 5, alive=[first, worker])
        in_transaction = kill_in_open_transaction(
            first, fault_app, give_up=lambda: count_completed(client, expected) >= n // 2
        )
        at_kill = {**expected, **starter.expected}
        done_at_kill = count_completed(client, at_kill)
        assert first.returncode == -9
        assert done_at_kill < len(at_kill), "every instance completed before the kill"
        print(
            f"processor killed with {done_at_kill} of {len(at_kill)} instances completed, "
            f"{'inside' if in_transaction else 'outside'} an open transaction"
        )

        # Same state dir, a new group member: it takes the partitions once the dead
        # member's session expires, and its read_committed restore waits until the
        # broker aborts the dead producer's open transaction.
        second = roles.start("processor", APP, env, name="processor-restarted")
        starter.wait_started(starter.started() + 50)
        expected.update(starter.finish())
        n = len(expected)
        wait_completed(client, expected, n, alive=[second, worker])
    roles.stop_all()

    assert_completed_exactly_once(fault_app, expected)
    assert_every_input_ran(markers, n)
    # The restarted processor reused the stores of the killed one: it restored
    # from their checkpoints, not from the beginning of the changelog.
    starts = _findall(r"state-changelog\[(\d)\]: restoring offsets (\d+) to", second)
    assert all(int(start) > 0 for _, start in starts), starts
    # The group settings reached the consumers only: no client warned about them.
    for role in (worker, second):
        assert "CONFWARN" not in role.log_text(), role.log_text()[-2000:]


def kill_in_open_transaction(
    proc: RoleProcess, app: durafka.App, *, give_up: Callable[[], bool], within: float = 2.0
) -> bool:
    """``kill -9`` a processor while one of its transactions is open, if seen in time.

    The kill happens anyway after ``within`` seconds or once ``give_up()``.

    A transaction is open while the changelog's last committed offset (what
    read_committed readers may reach) lags behind its end: records were
    written but neither committed nor aborted. Returns whether the kill
    happened inside one (best effort: the processor may commit in between).
    """
    topic = HubTopics(app.settings.task_hub).changelog
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    specs = {KafkaTopicPartition(topic, p): latest for p in range(app.settings.partitions)}
    admin = admin_client(app.settings.bootstrap_servers)

    def ends(level: IsolationLevel) -> dict[int, int]:
        futures = admin.list_offsets(specs, isolation_level=level, request_timeout=5)
        return {tp.partition: f.result().offset for tp, f in futures.items()}

    def open_somewhere() -> bool:
        # Written end first: a committed end behind it later means still open.
        written = ends(IsolationLevel.READ_UNCOMMITTED)
        committed = ends(IsolationLevel.READ_COMMITTED)
        return any(committed[p] < written[p] for p in written)

    deadline = time.monotonic() + within
    while not open_somewhere() and time.monotonic() < deadline and not give_up():
        pass
    proc.kill()
    # Right after a commit the markers are still being written, which looks the
    # same for a moment; a transaction still open now was left by the dead producer.
    time.sleep(0.5)
    return open_somewhere()


# -- 2. a worker killed mid-run ---------------------------------------------------------------


def test_worker_kill_9_mid_run_new_worker_finishes_the_work(
    fault_app: durafka.App, roles: RoleLauncher, markers: Path, tmp_path: Path
) -> None:
    env = role_env(fault_app, tmp_path / "state", markers)
    processor = roles.start("processor", APP, env, name="processor", partitions="0-3")
    doomed = roles.start("worker", APP, env, name="worker-killed")
    wait_ready(processor, doomed)
    with fault_app.sync_client() as client:
        starter = Starter(client, per_second=50.0)
        starter.start()
        starter.wait_completed(60, alive=[processor, doomed])
        doomed.kill()
        assert doomed.returncode == -9
        started_at_kill = starter.started()

        # The replacement gets the partitions once the dead member's session
        # expires; instances started from now on need it for every activity.
        replacement = roles.start("worker", APP, env, name="worker-replacement")
        starter.wait_started(started_at_kill + 50)
        expected = starter.finish()
        n = len(expected)
        wait_completed(client, expected, n, alive=[processor, replacement])
    roles.stop_all()

    assert_completed_exactly_once(fault_app, expected)
    runs = marker_runs(markers)
    assert len(runs) == 2, f"expected marker files of both workers: {sorted(runs)}"
    total = assert_every_input_ran(markers, n)
    # At-least-once: an activity the killed worker ran without committing its
    # offset runs again on the replacement (the processor drops the duplicate
    # result), so re-runs are allowed; the exactly-once check above is what counts.
    assert sum(total.values()) >= n
    reruns = sorted(x for x, c in total.items() if c > 1)
    print(f"crash_marker ran more than once for {len(reruns)} inputs: {reruns[:20]}")


# -- 3. the state of a stopped processor is lost ---------------------------------------------


def test_deleted_state_dir_is_restored_from_the_changelog(
    fault_app: durafka.App, roles: RoleLauncher, markers: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env = role_env(fault_app, state_dir, markers)
    worker = roles.start("worker", APP, env, name="worker")
    first = roles.start("processor", APP, env, name="processor-first", partitions="0-3")
    wait_ready(first, worker)
    with fault_app.sync_client() as client:
        starter = Starter(client, per_second=50.0)
        starter.start()
        starter.wait_completed(60, alive=[first, worker])
        assert first.stop() == 0
        waiting = [
            iid
            for iid in list(starter.expected)
            if (st := client.get_status(iid)) is not None
            and st.runtime_status is RuntimeStatus.RUNNING
        ]
        assert waiting, "no instance was waiting on an activity when the processor stopped"

        hub_state = state_dir / fault_app.settings.task_hub
        stores = sorted(p.name for p in hub_state.iterdir())
        assert stores == [str(p) for p in range(PARTITIONS)], stores
        shutil.rmtree(state_dir)

        # Meanwhile the worker goes on and more instances are started: their
        # records wait in H.orchestrations for a processor that knows the
        # instances again, which only the changelog can tell it.
        second = roles.start("processor", APP, env, name="processor-rebuilt", partitions="0-3")
        starter.wait_started(starter.started() + 50)
        expected = starter.finish()
        n = len(expected)
        wait_completed(client, expected, n, alive=[second, worker])
    roles.stop_all()

    restored = {
        int(p): int(r)
        for p, r in _findall(
            r"partition (\d) ready at offset \d+: restored (\d+) changelog records", second
        )
    }
    assert sorted(restored) == list(range(PARTITIONS)), second.log_tail()
    assert all(r > 0 for r in restored.values()), f"nothing restored: {restored}"
    assert_completed_exactly_once(fault_app, expected)
    assert_every_input_ran(markers, n)


def _findall(pattern: str, proc: RoleProcess) -> list[tuple[str, ...]]:
    """The groups of every match of ``pattern`` in the role's log."""
    return [m.groups() for m in re.finditer(pattern, proc.log_text())]


# -- 4. processors joining and leaving the group -----------------------------------------------


def test_processors_join_and_leave_the_group_mid_run(
    fault_app: durafka.App, roles: RoleLauncher, markers: Path, tmp_path: Path
) -> None:
    def env(i: int) -> dict[str, str]:
        # A state dir each, as on separate machines: a moved partition is restored.
        return role_env(fault_app, tmp_path / f"state-{i}", markers)

    worker = roles.start("worker", APP, env(0), name="worker")
    one = roles.start("processor", APP, env(1), name="processor-1")
    two = roles.start("processor", APP, env(2), name="processor-2")
    for proc in (one, two):
        proc.wait_for_log(r"assigned partitions \[\d")
    with fault_app.sync_client() as client:
        starter = Starter(client, per_second=30.0)
        starter.start()
        starter.wait_started(60)
        three = roles.start("processor", APP, env(3), name="processor-3")
        three.wait_for_log(r"partition \d ready", timeout=60)
        starter.wait_started(starter.started() + 30)
        assert three.stop() == 0
        starter.wait_started(starter.started() + 30)
        expected = starter.finish()
        n = len(expected)
        wait_completed(client, expected, n, alive=[one, two, worker])
    roles.stop_all()

    # Both first members owned partitions (cooperative rebalancing split them).
    for proc in (one, two):
        assert _findall(r"assigned partitions \[(\d[\d, ]*)\]", proc), proc.log_tail()
    assert _findall(r"partition \d ready", three)
    assert "revoked partitions" in three.log_text()
    assert_completed_exactly_once(fault_app, expected)
    assert_every_input_ran(markers, n)


# -- 5. a commit that fails -----------------------------------------------------------------------


def test_failed_commit_reprocesses_the_batch_exactly_once(
    fault_app: durafka.App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 200
    processor = fault_app.processor()
    producer = processor._producer
    status_topic = HubTopics(fault_app.settings.task_hub).status
    real_produce = producer.produce
    real_commit = producer.commit_transaction
    completions_in_tx: set[str] = set()
    failed: list[set[str]] = []

    def spying_produce(
        topic: str, partition: int, key: Any, value: Any, *args: Any, **kwargs: Any
    ) -> None:
        if topic == status_topic and value is not None:
            st = decode_status(value)
            if st.runtime_status is RuntimeStatus.COMPLETED:
                completions_in_tx.add(st.instance_id)
        real_produce(topic, partition, key, value, *args, **kwargs)

    def failing_commit_once(timeout: float = 30.0) -> None:
        # The first transaction that completes instances fails; its records were
        # produced and flushed, so the broker really aborts them.
        completed = set(completions_in_tx)
        completions_in_tx.clear()
        if completed and not failed:
            failed.append(completed)
            raise TransactionError("injected: commit_transaction failed")
        real_commit(timeout)

    monkeypatch.setattr(producer, "produce", spying_produce)
    monkeypatch.setattr(producer, "commit_transaction", failing_commit_once)

    runner = Runner()
    runner.add("processor", processor.run)
    runner.add("worker", fault_app.worker().run)
    caplog.set_level(logging.WARNING, logger="durafka.processor")
    with fault_app.sync_client() as client:
        expected = start_crash_workload(client, n)
        runner.start()
        try:
            wait_completed(client, expected, n, timeout=90)
        finally:
            runner.stop()

    assert len(failed) == 1 and failed[0], "no commit with completions was failed"
    assert "aborted, processing the batch again" in caplog.text
    assert failed[0] <= set(expected)
    assert_completed_exactly_once(fault_app, expected)


# -- 6. replay at every step gives the same histories as the cache -------------------------------


def _replay_workload(client: Client) -> dict[str, Any]:
    """Sequential orchestrations (deterministic step boundaries); id -> expected output."""
    expected: dict[str, Any] = {}
    for x in range(80):
        expected[client.start_new(apps.crash_workload, x, instance_id=f"cw-{x}")] = x + 1
    for x in range(30):
        expected[client.start_new(apps.sequence, x, instance_id=f"seq-{x}")] = x + 5
    for x in range(20):
        order = apps.Order("pen", x % 2)
        out = "charged 1 x pen" if x % 2 else "declined: PaymentDeclined"
        expected[client.start_new(apps.checkout, order, instance_id=f"co-{x}")] = out
    return expected


def _histories(app: durafka.App, ids: Iterable[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Each instance's history from the stopped processor's stores, without timestamps."""
    hub = app.settings.task_hub
    stores = {p: app.store_factory.open(hub, p) for p in range(app.settings.partitions)}
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for iid in ids:
            p = partition_for(iid.encode(), app.settings.partitions)
            tx = StoreTransaction(stores[p])
            inst = load_instance(tx, iid, p)
            tx.fail()
            assert inst is not None, f"{iid} is not in the store of partition {p}"
            out[iid] = [(e.kind, e.seq, e.name, e.payload) for e in inst.history]
        return out
    finally:
        for store in stores.values():
            store.close()


def test_replay_without_cache_yields_the_same_histories(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replays: Counter[str] = Counter()
    real_replay = OrchestrationExecutor.replay

    def counting_replay(self: OrchestrationExecutor, history: list[HistoryEvent]) -> None:
        if history:  # a new instance "replays" its empty history
            replays[label] += 1
        real_replay(self, history)

    monkeypatch.setattr(OrchestrationExecutor, "replay", counting_replay)
    outputs: dict[str, dict[str, Any]] = {}
    histories: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    expected: dict[str, Any] = {}
    # Activities go through the worker (not run inside the processor's batch), so
    # each step is its own batch and the no-cache run really replays at every step.
    for label, overrides in (("cached", {}), ("replayed", {"cache_size": 0})):
        hub = f"t{label[:3]}{uuid.uuid4().hex[:8]}"
        app = make_app(kafka_bootstrap, hub, tmp_path / label, local_activities=False, **overrides)
        try:
            app.ensure_topics()
            with app.running(), app.sync_client() as client:
                expected = _replay_workload(client)
                outputs[label] = {
                    iid: client.wait_for_completion(iid, timeout=90) for iid in expected
                }
            # The processor has stopped and released its stores.
            histories[label] = _histories(app, expected)
        finally:
            app.close()

    assert outputs["cached"] == outputs["replayed"] == expected
    # The cached run resumed live orchestrators; the other replayed at every step
    # after the first (crash_workload and checkout: 2 or 1 more, sequence: 5 more).
    steps_after_first = 80 * 2 + 30 * 5 + 20 * 1
    assert replays["cached"] < steps_after_first // 10, replays
    assert replays["replayed"] >= steps_after_first, replays
    cached, replayed = histories["cached"], histories["replayed"]
    for iid in expected:
        assert replayed[iid] == cached[iid], f"{iid} differs:\n{cached[iid]}\n{replayed[iid]}"
    kinds = Counter(kind for history in cached.values() for kind, *_ in history)
    # Not vacuous: every activity call and completion is in the compared histories.
    assert kinds["TASK_SCHEDULED"] == 80 * 2 + 30 * 5 + 20
    assert kinds["EXECUTION_COMPLETED"] == len(expected)
