"""An activity that kills its worker process, on the real broker, with a supervisor.

The worker runs as a child process (alone, or with the processor in one
``durafka run`` process); the test restarts it whenever it exits, as a
supervisor (Kubernetes, systemd) would. Before delivery counts, the task ran on
every restart, for ever; now it fails with ``PoisonTaskError`` after
``max_activity_deliveries`` (5) deliveries, is not retried by the retry policy,
and the innocent activities that ran beside it complete. ``durafka run`` first
runs it next to the processor, then, after that unclean exit, through the
worker.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from durafka.status import TERMINAL_STATUSES, RuntimeStatus
from tests.e2e import apps
from tests.e2e.conftest import make_app
from tests.e2e.test_faults import FAST_GROUP
from tests.support.processes import RoleLauncher, hub_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = "tests.e2e.apps:app"
#: Restarts allowed before the test calls it a crash loop (5 are expected).
MAX_RESTARTS = 8


@pytest.mark.parametrize("layout", ["worker", "run"])
def test_an_activity_that_kills_its_worker_fails_after_five_deliveries(
    kafka_bootstrap: str, hub: str, tmp_path: Path, roles: RoleLauncher, layout: str
) -> None:
    app = make_app(kafka_bootstrap, hub, tmp_path / "client")
    app.ensure_topics()
    env = hub_env(
        kafka_bootstrap,
        hub,
        tmp_path / "state",
        partitions=app.settings.partitions,
        DURAFKA_CLIENT_CONFIG=FAST_GROUP,
    )
    # "worker": a processor of its own survives the activity; "run": it dies with it.
    processor = roles.start("processor", APP, env) if layout == "worker" else None
    victim = roles.start(layout, APP, env, name=f"{layout}-0")
    crashes = 0
    try:
        with app.sync_client() as client:
            iid = client.start_new(apps.survives_a_poison_activity, 4)
            deadline = time.monotonic() + 240
            while True:
                status = client.get_status(iid)
                if status is not None and status.runtime_status in TERMINAL_STATUSES:
                    break
                if processor is not None:
                    processor.assert_alive()
                if not victim.is_alive():
                    assert victim.returncode == 3, victim.log_tail()  # the activity's exit
                    crashes += 1
                    assert crashes <= MAX_RESTARTS, (
                        f"{layout} crashed {crashes} times: the poison task keeps running"
                    )
                    victim = roles.start(layout, APP, env, name=f"{layout}-{crashes}")
                assert time.monotonic() < deadline, f"not done after {crashes} crashes"
                time.sleep(0.1)
    finally:
        app.close()
    assert status.runtime_status is RuntimeStatus.COMPLETED, status.failure_details
    output = json.loads(status.serialized_output or b"null")
    assert output["innocent"] == 1 + 2 + 3 + 4  # add_one(0..3): they all completed
    assert output["poison"].startswith("durafka.errors.PoisonTaskError: activity ")
    assert "delivered 5 times without a result" in output["poison"]
    # Five deliveries, each ended by the activity; the retry policy retried none. "run"
    # ran the first next to the processor: the worker's first delivery after that
    # unclean exit is taken as the second (the careful window of its takeover).
    # (A worker once started a task its last note called "not started", so a crash
    # there went uncounted and this saw 6: tests/activities/test_deliveries.py.)
    assert crashes == 5
    assert victim.is_alive()
    assert "was delivered 5 times without a result" in victim.log_text()
    if layout == "run":
        assert "did not stop cleanly: activities run through the worker" in victim.log_text()
