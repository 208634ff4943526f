"""The broker frozen for 60 s under load (issue 18): every role recovers after the resume.

A broker that stops answering (SIGSTOP: a long GC pause, a VM migration, a
network partition) left a processor stuck for good in a librdkafka call that
never returned, ignoring SIGTERM: no instance of its partitions completed
again. Here the broker is this test's own (it is frozen), the roles are child
processes on two task hubs, one with a static-range processor and one with a
group-mode processor, each with a worker; the test restarts a role that exits,
as a supervisor would. During the freeze a worker gets SIGTERM and must exit
within the documented bound. After the resume, every instance, those started
before the freeze, during it and after it, completes within a bounded time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import durafka
from durafka.cli.apps import STOP_BOUND_S
from durafka.client import Client
from durafka.dev.broker import LocalBroker
from durafka.status import RuntimeStatus
from tests.e2e import apps
from tests.e2e.conftest import make_app
from tests.support.processes import RoleLauncher, RoleProcess, hub_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = "tests.e2e.apps:app"
FREEZE_S = 60.0
#: Every instance completes within this long after the broker resumes.
RECOVERY_S = 120.0
FAST_GROUP = json.dumps(
    {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "1000"}
)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test only (it gets frozen)."""
    broker = LocalBroker(tmp_path / "kafka")
    broker.start()
    yield broker
    with contextlib.suppress(ProcessLookupError):
        os.kill(broker.status().pid or 0, signal.SIGCONT)
    broker.stop()


class Hub:
    """One task hub: its app, client, roles (restarted when they exit) and instances."""

    def __init__(
        self, name: str, bootstrap: str, tmp_path: Path, roles: RoleLauncher, *, static: bool
    ) -> None:
        self.name = name
        self.app = make_app(bootstrap, f"freeze-{name}", tmp_path / name)
        self.app.ensure_topics()
        self.env = hub_env(
            bootstrap,
            self.app.settings.task_hub,
            tmp_path / name,
            partitions=self.app.settings.partitions,
            DURAFKA_CLIENT_CONFIG=FAST_GROUP,
        )
        self.roles = roles
        self.partitions = "0-3" if static else None
        self.procs: dict[str, RoleProcess] = {}
        self.restarts = 0
        self.client: Client = self.app.sync_client()
        self.expected: dict[str, int] = {}
        self._lock = threading.Lock()
        for role in ("processor", "worker"):
            self._start(role)

    def _start(self, role: str) -> None:
        n = sum(1 for p in self.roles.processes if p.name.startswith(f"{self.name}-{role}"))
        self.procs[role] = self.roles.start(
            role,
            APP,
            self.env,
            name=f"{self.name}-{role}-{n}",
            partitions=self.partitions if role == "processor" else None,
        )

    def supervise(self) -> None:
        """Restart the roles that exited."""
        for role, proc in list(self.procs.items()):
            if not proc.is_alive():
                self.restarts += 1
                self._start(role)

    def start(self, x: int) -> None:
        iid = self.client.start_new(apps.crash_workload, x, instance_id=f"{self.name}-{x}")
        with self._lock:
            self.expected[iid] = x + 1

    def unfinished(self) -> list[str]:
        with self._lock:
            ids = list(self.expected)
        view = self.client.status_view
        out = []
        for iid in ids:
            st = view.get(iid)
            if st is None or st.runtime_status is not RuntimeStatus.COMPLETED:
                out.append(iid)
        return out

    def close(self) -> None:
        self.client.close()
        self.app.close()


class Starter(threading.Thread):
    """Starts an instance on every hub every 0.2 s, frozen broker or not."""

    def __init__(self, hubs: list[Hub]) -> None:
        super().__init__(daemon=True)
        self.hubs = hubs
        self.finish = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        x = 1000
        while not self.finish.is_set():
            for hub in self.hubs:
                try:
                    hub.start(x)
                except durafka.DurafkaError as exc:  # a start the frozen broker refused
                    self.errors.append(exc)
            x += 1
            self.finish.wait(0.2)


def test_every_instance_completes_after_a_60_s_broker_freeze(
    own_broker: LocalBroker, tmp_path: Path, roles: RoleLauncher
) -> None:
    bootstrap = own_broker.bootstrap
    assert bootstrap is not None
    hubs = [
        Hub("static", bootstrap, tmp_path, roles, static=True),
        Hub("group", bootstrap, tmp_path, roles, static=False),
    ]
    starter = Starter(hubs)
    try:
        for hub in hubs:
            for x in range(20):
                hub.start(x)
        deadline = time.monotonic() + 120
        while any(hub.unfinished() for hub in hubs):
            assert time.monotonic() < deadline, "the hubs did not start working"
            for hub in hubs:
                hub.supervise()
            time.sleep(0.2)
        starter.start()
        time.sleep(2.0)  # mid-load

        pid = own_broker.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        frozen_until = time.monotonic() + FREEZE_S
        time.sleep(5.0)
        # SIGTERM stops a role within its bound, broker or no broker (Kubernetes kills
        # a pod 30 s after SIGTERM); the supervisor loop below starts it again.
        stopping = hubs[0].procs["worker"]
        stopping.terminate()
        assert stopping.wait(STOP_BOUND_S + 5) is not None, (
            f"the worker did not exit within {STOP_BOUND_S + 5:.0f} s of SIGTERM\n"
            f"{stopping.log_tail()}"
        )
        while time.monotonic() < frozen_until:
            for hub in hubs:
                hub.supervise()
            time.sleep(0.2)
        os.kill(pid, signal.SIGCONT)

        resumed = time.monotonic()
        time.sleep(5.0)  # a few starts after the resume too
        starter.finish.set()
        starter.join(60)
        while True:
            late = {hub.name: hub.unfinished() for hub in hubs}
            if not any(late.values()):
                break
            waited = time.monotonic() - resumed
            assert waited < RECOVERY_S, (
                f"{ {k: len(v) for k, v in late.items()} } instances not completed "
                f"{waited:.0f} s after the broker resumed (e.g. {[v[:3] for v in late.values()]}); "
                f"restarts: { {h.name: h.restarts for h in hubs} }"
            )
            for hub in hubs:
                hub.supervise()
            time.sleep(0.5)
    finally:
        starter.finish.set()
        for hub in hubs:
            hub.close()
    for hub in hubs:
        assert len(hub.expected) > 20, f"{hub.name}: no instance started during the load"
