"""kill -9 of a processor with timers, retries and buffered events in flight (real broker).

The processor runs as a child process (``python -m durafka.cli processor``) on a
static partition range, so its restart fences the dead one's transactional id
at once. The worker runs in this process and stays up. While the processor is
dead, timers come due and events are raised; after the restart every instance
must complete with the right output, exactly once (one terminal record each
on ``H.status``), and no activity may run more often than its retries ask for.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

import durafka
from durafka import RuntimeStatus
from durafka.client import Client
from durafka.runtime.history import EventKind
from tests.features import apps
from tests.features.conftest import make_app
from tests.features.helpers import count, has_status, status_records, wait_processed
from tests.support.processes import RoleLauncher, hub_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = "tests.features.apps:app"


def _running(client: Client, iid: str) -> bool:
    return has_status(client, iid, RuntimeStatus.RUNNING)


def _ran(workdir: Path, key: str) -> bool:
    return apps.runs(workdir, key) >= 1


def test_kill_9_with_timers_retries_and_buffered_events_in_flight(
    kafka_bootstrap: str, hub: str, tmp_path: Path, workdir: Path, roles: RoleLauncher
) -> None:
    app = make_app(kafka_bootstrap, hub, tmp_path / "worker-state")
    app.ensure_topics()
    env = hub_env(kafka_bootstrap, hub, tmp_path / "processor-state")
    processor = roles.start("processor", APP, env, name="processor-killed", partitions="0-3")
    try:
        with app.running(processor=False), app.sync_client() as client:
            # Timers: due while the processor is dead, or soon after its restart.
            sleepers = {
                client.start_new(apps.sleeper, s, instance_id=f"sleep-{s}"): s
                for s in (3.0, 3.5, 8.0)
            }
            # Retries: each fails twice, waiting 2 s on a durable timer before a retry.
            retriers = [
                client.start_new(
                    apps.retrying,
                    apps.RetryInput(apps.Flaky(str(workdir), f"retry-{i}", 2), 5, 2.0),
                    instance_id=f"retry-{i}",
                )
                for i in range(3)
            ]
            # Buffered events: items arrive before the wait for them begins.
            gatherer = client.start_new(apps.gather_items, 4, instance_id="gatherer")
            waiter = client.start_new(apps.wait_for, "late", instance_id="waiter")

            for iid in [*sleepers, *retriers, gatherer, waiter]:
                running = partial(has_status, client, iid, RuntimeStatus.RUNNING)
                wait_until(running, timeout=60, what=f"{iid} running")
            client.raise_event(gatherer, "item", 1)
            client.raise_event(gatherer, "item", 2)
            for i in range(3):
                wait_until(partial(_ran, workdir, f"retry-{i}"), timeout=60)
            wait_processed(app.transport, hub)  # the first failures are in history
            # Still in flight (else the test would prove nothing): fail rather than pass.
            assert all(_running(client, i) for i in [*sleepers, *retriers])

            processor.kill()
            assert processor.returncode == -9

            # While no processor runs: events arrive, short timers come due.
            client.raise_event(gatherer, "item", 3)
            client.raise_event(gatherer, "go")
            client.raise_event(gatherer, "item", 4)
            client.raise_event(waiter, "late", {"raised": "while the processor was dead"})
            time.sleep(4.0)  # real time: the 3 s and 3.5 s timers are due at the restart

            restarted = roles.start(
                "processor", APP, env, name="processor-restarted", partitions="0-3"
            )
            for iid, seconds in sleepers.items():
                assert client.wait_for_completion(iid, timeout=90) >= seconds
            for iid in retriers:
                assert client.wait_for_completion(iid, timeout=90) == "succeeded on run 3"
            assert client.wait_for_completion(gatherer, timeout=90) == [1, 2, 3, 4]
            assert client.wait_for_completion(waiter, timeout=90) == {
                "raised": "while the processor was dead"
            }
            restarted.assert_alive()

            for iid in retriers:
                history = client.get_history(iid)
                assert count(history, EventKind.TASK_SCHEDULED) == 3
                assert count(history, EventKind.TIMER_FIRED) == 2
            for iid in sleepers:
                assert count(client.get_history(iid), EventKind.TIMER_FIRED) == 1
    finally:
        app.close()
    roles.stop_all()

    # Exactly once: one terminal status per instance, and no retry ran twice.
    reader = durafka.App(settings=app.settings)
    try:
        for iid in [*sleepers, *retriers, gatherer, waiter]:
            records = status_records(reader.transport, hub, iid)
            terminal = [s.runtime_status for s in records if s is not None and s.is_terminal]
            assert terminal == [RuntimeStatus.COMPLETED], (iid, terminal)
    finally:
        reader.close()
    for i in range(3):
        assert apps.runs(workdir, f"retry-{i}") == 3
