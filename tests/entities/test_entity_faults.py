"""Entities across a processor ``kill -9`` on the real broker: exactly once per operation.

The processor runs as a real process (``python -m durafka.cli processor``) on a
static partition range, so its replacement (same ``transactional.id``) fences
it and aborts its open transaction at once. Entity state, queues and locks
come back from the store and the changelog; a signal or an operation is
neither lost nor applied twice, which the exact final counts show.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import durafka
from durafka.client import Client
from durafka.codec.records import decode_entity
from tests.entities import apps
from tests.entities.conftest import make_app
from tests.entities.test_entities import check_bank, entity_records, start_transfers, wait_state
from tests.support.processes import RoleLauncher, RoleProcess, hub_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = "tests.entities.apps:app"


@pytest.fixture
def fault_app(kafka_bootstrap: str, hub: str, tmp_path: Path) -> Iterator[durafka.App]:
    """The entity test app on a fresh task hub, its topics (4 partitions) created."""
    app = make_app(kafka_bootstrap, hub, tmp_path / "client-state")
    app.ensure_topics()
    yield app
    app.close()


def processor_env(app: durafka.App, state_dir: Path) -> dict[str, str]:
    s = app.settings
    return hub_env(
        s.bootstrap_servers,
        s.task_hub,
        state_dir,
        partitions=s.partitions,
        transaction_timeout_ms=s.transaction_timeout_ms,
        DURAFKA_BATCH_SIZE="200",
    )


class Starter(threading.Thread):
    """Runs ``start(i)`` for i in 0..n-1 at a steady rate, so the kill hits running work."""

    def __init__(self, n: int, per_second: float, start: Callable[[int], object]) -> None:
        super().__init__(name="starter", daemon=True)
        self.n = n
        self.interval = 1.0 / per_second
        self.start_one = start
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            began = time.monotonic()
            for i in range(self.n):
                self.start_one(i)
                self.done += 1
                time.sleep(max(0.0, began + (i + 1) * self.interval - time.monotonic()))
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"only {self.done} of {self.n} started"
        assert self.error is None, self.error


def restart(roles: RoleLauncher, env: dict[str, str], killed: RoleProcess) -> RoleProcess:
    """``kill -9`` ``killed`` and start its replacement with ``env``."""
    killed.kill()
    assert killed.returncode == -9
    return roles.start("processor", APP, env, name="processor-restarted", partitions="0-3")


def counter_state(client: Client, key: str) -> int:
    found = client.get_entity(apps.counter(key))
    return int(found.state) if found is not None else 0


def test_10000_signals_across_a_processor_kill_9(
    fault_app: durafka.App, roles: RoleLauncher, tmp_path: Path
) -> None:
    env = processor_env(fault_app, tmp_path / "state")
    first = roles.start("processor", APP, env, name="processor-killed", partitions="0-3")
    first.wait_for_log(r"partition \d ready")
    with fault_app.sync_client() as client:
        starter = Starter(
            100,
            25.0,
            lambda i: client.start_new(
                apps.signal_many, apps.SignalMany("load", 100), instance_id=f"s-{i}"
            ),
        )
        starter.start()
        deadline = time.monotonic() + 60
        while counter_state(client, "load") < 2_000:
            first.assert_alive()
            assert time.monotonic() < deadline, "the counter did not reach 2,000"
            time.sleep(0.01)
        second = restart(roles, env, first)
        at_kill = counter_state(client, "load")
        assert at_kill < 10_000, "every signal was counted before the kill"
        print(f"processor killed at count {at_kill} with {starter.done} of 100 started")
        starter.finish()
        wait_state(client, apps.counter("load"), 10_000, timeout=120)
        for i in range(100):
            assert client.wait_for_completion(f"s-{i}", timeout=60) == 100
        second.assert_alive()
    roles.stop_all()

    # What other services read: committed records only, never more than 10,000.
    states = [
        int(decode_entity(v).state or b"0")
        for v in entity_records(fault_app, apps.counter("load"))
        if v
    ]
    assert states[-1] == 10_000
    assert states == sorted(states), "the published count went backwards"


def test_bank_transfers_across_a_processor_kill_9(
    fault_app: durafka.App, roles: RoleLauncher, tmp_path: Path
) -> None:
    accounts, transfers = 20, 200  # and one audit of all accounts per 10 transfers
    env = processor_env(fault_app, tmp_path / "state")
    first = roles.start("processor", APP, env, name="processor-killed", partitions="0-3")
    first.wait_for_log(r"partition \d ready")
    with fault_app.sync_client() as client:
        for i in range(accounts):
            client.signal_entity(apps.account(i), "deposit", 100)
        for i in range(accounts):
            wait_state(client, apps.account(i), 100)
        ids: dict[str, str] = {}

        def start_batch(i: int) -> None:
            ids.update(start_transfers(client, accounts, 10, 1, prefix=f"b{i}"))

        starter = Starter(transfers // 10, 4.0, start_batch)
        starter.start()
        deadline = time.monotonic() + 60
        while (
            sum(
                1
                for iid in ids.copy()
                if (st := client.get_status(iid)) is not None and st.is_terminal
            )
            < transfers // 5
        ):
            first.assert_alive()
            assert time.monotonic() < deadline, "transfers did not progress"
            time.sleep(0.02)
        # A new state dir, as on another machine: entity states, locks and queues
        # all come back from the changelog alone.
        second = restart(roles, processor_env(fault_app, tmp_path / "state-2"), first)
        assert starter.done < transfers // 10, "every transfer was started before the kill"
        print(f"processor killed with {starter.done * 10} of {transfers} transfers started")
        starter.finish()
        assert len([k for k in ids.values() if k == "transfer"]) == transfers
        check_bank(client, ids, accounts, timeout=180)
        second.assert_alive()
    restored = re.findall(
        r"partition \d ready at offset \d+: restored (\d+) changelog records", second.log_text()
    )
    assert len(restored) == 4 and sum(int(n) for n in restored) > 0, second.log_tail()
