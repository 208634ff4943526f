"""The examples image in real containers: two processors on static ranges, a worker, a SIGKILL.

Podman builds ``docker/Dockerfile`` on a base image made with debootstrap
(cached under ``~/.cache/durafka`` and in Podman's store, so only the first run
on a machine pays for it) and runs the roles against the session's broker over
the host network, as a newcomer would run the image. The processors take their
ranges from their hostnames, as StatefulSet pods do (``--pods 2
--ordinal-from-hostname``). Podman, runc and debootstrap are installed with apt
when missing (CI machines are fresh; the tests run as root there).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

import durafka
from durafka.client import Client
from durafka.dev.broker import free_port
from durafka.dev.podman import Podman, build_app_image, ensure_podman
from durafka.partitioning import partition_for
from durafka.settings import Settings
from durafka.topology import load_hub_spec
from durafka.transport.admin import apply_topics
from tests.deploy import containerapp
from tests.deploy.manifests import REPO
from tests.e2e.test_faults import assert_completed_exactly_once, count_completed
from tests.support.compiled import listed_in_setup
from tests.support.kafka import admin_client

# The first run on a machine installs Podman and makes the base image (minutes).
pytestmark = [pytest.mark.containers, pytest.mark.kafka, pytest.mark.timeout(1200)]

IMAGE = "localhost/durafka-examples:test"
COMPILED_IMAGE = "localhost/durafka-examples:test-compiled"
PARTITIONS = 8
#: The app the containers run, mounted into /app.
APP_MODULE = f"{REPO / 'tests' / 'deploy' / 'containerapp.py'}:/app/containerapp.py:ro"
N = 1000


@pytest.fixture(scope="module")
def podman() -> Podman:
    return ensure_podman(install=True)


@pytest.fixture(scope="module")
def example_image(podman: Podman) -> str:
    """The examples image of this checkout (layers reused while their inputs are unchanged)."""
    return build_app_image(podman, REPO, IMAGE, requirements="docker/requirements-examples.txt")


@pytest.fixture(scope="module")
def compiled_image(podman: Podman) -> str:
    """The examples image built with ``DURAFKA_COMPILE=1`` (mypyc in its build stage)."""
    return build_app_image(
        podman, REPO, COMPILED_IMAGE, requirements="docker/requirements-examples.txt", compiled=True
    )


@dataclass
class Containers:
    """Containers and volumes a test started; all removed at the end, logs kept for failures."""

    podman: Podman
    prefix: str
    names: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def run(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        *,
        mounts: list[str],
        volume: str | None = None,
        hostname: str | None = None,
        image: str = IMAGE,
    ) -> str:
        """``podman run -d`` the examples image with ``args`` as the durafka command.

        ``volume`` is a named volume of this test, mounted at the image's state dir.
        """
        full = f"{self.prefix}-{name}"
        # No healthcheck: Podman runs it from systemd timers, which these hosts lack.
        flags = ["--name", full, "--network", "host", "--no-healthcheck", *self.podman.limits()]
        for key, value in env.items():
            flags += ["-e", f"{key}={value}"]
        for mount in mounts:
            flags += ["-v", mount]
        if volume is not None:
            self.volumes.append(f"{self.prefix}-{volume}")
            flags += ["-v", f"{self.prefix}-{volume}:/var/lib/durafka"]
        if hostname is not None:
            flags += ["--hostname", hostname]
        self.podman.run("run", "-d", *flags, image, *args)
        self.names.append(full)
        return full

    def logs(self, name: str) -> str:
        done = self.podman.run("logs", name, check=False)
        return done.stdout + done.stderr

    def running(self, name: str) -> bool:
        done = self.podman.run("inspect", "-f", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def remove_all(self) -> None:
        for name in self.names:
            # -v: also the anonymous volume of the image's VOLUME (the worker's state dir).
            self.podman.run("rm", "-f", "-v", "-t", "2", name, check=False)
        for volume in self.volumes:
            self.podman.run("volume", "rm", "-f", volume, check=False)


@pytest.fixture
def containers(podman: Podman, request: pytest.FixtureRequest) -> Iterator[Containers]:
    started = Containers(podman, f"durafka-test-{uuid.uuid4().hex[:6]}")
    failed_before = request.session.testsfailed
    try:
        yield started
    finally:
        if request.session.testsfailed > failed_before:
            for name in started.names:
                print(f"--- podman logs {name} (last 40 lines)")
                print("\n".join(started.logs(name).splitlines()[-40:]))
        started.remove_all()


def test_processor_containers_killed_and_restarted_complete_every_instance_once(
    example_image: str, containers: Containers, kafka_bootstrap: str
) -> None:
    client_app, env = _new_hub(kafka_bootstrap)
    # Smaller batches than the default: many transactions, one of them hit by the kill.
    env["DURAFKA_BATCH_SIZE"] = "100"
    expected = {f"o{i}": f"c-r-o{i}" for i in range(N)}
    first_half = [iid for iid in expected if partition_for(iid.encode(), PARTITIONS) < 4]
    with client_app.sync_client() as client:
        # Host networking: each container serves /metrics and /healthz on a port of its own.
        worker_env = {**env, "DURAFKA_METRICS_PORT": str(free_port())}
        containers.run("worker", ["worker", "containerapp:app"], worker_env, mounts=[APP_MODULE])
        processors = [
            containers.run(
                f"processor-{i}",
                ["processor", "containerapp:app", "--pods", "2", "--ordinal-from-hostname"],
                {**env, "DURAFKA_METRICS_PORT": str(free_port())},
                mounts=[APP_MODULE],
                volume=f"state-{i}",
                hostname=f"durafka-processor-{i}",
            )
            for i in range(2)
        ]
        # A steady stream of starts (about 8 s): work is in flight whenever the kill lands.
        starter = threading.Thread(target=_start_all, args=(client, list(expected), 120.0))
        starter.start()
        try:
            # Some of processor-0's range (partitions 0-3 of 8) done, far from all.
            _wait(lambda: count_completed(client, first_half) >= 50, containers)
            containers.podman.run("kill", "--signal", "KILL", processors[0])
            done_at_kill = count_completed(client, first_half)
        finally:
            starter.join()
        assert done_at_kill < len(first_half), "processor-0 finished its range before the kill"
        assert not containers.running(processors[0])
        # Same container, same state volume, same hostname (so the same range).
        containers.podman.run("start", processors[0])
        _wait(lambda: count_completed(client, expected) == N, containers, timeout=240.0)
    print(f"processor-0 killed with {done_at_kill} of its {len(first_half)} instances completed")
    assert_completed_exactly_once(client_app, expected)
    logs = [containers.logs(name) for name in processors]
    # Each took its half by its hostname's ordinal, the restarted one again.
    assert logs[0].count("assigned partitions [0, 1, 2, 3]") == 2, logs[0][-3000:]
    assert logs[1].count("assigned partitions [4, 5, 6, 7]") == 1, logs[1][-3000:]
    client_app.close()


def test_the_compiled_image_runs_the_compiled_build(
    compiled_image: str, containers: Containers, kafka_bootstrap: str
) -> None:
    """``--build-arg DURAFKA_COMPILE=1``: the roles run setup.py's modules compiled (the
    processor says so when it starts) and complete every instance once; the image has
    no C compiler (it stays in the build stage)."""
    client_app, env = _new_hub(kafka_bootstrap)
    expected = {f"k{i}": f"c-r-k{i}" for i in range(200)}
    with client_app.sync_client() as client:
        for role in ("worker", "processor"):
            containers.run(
                role,
                [role, "containerapp:app"],
                {**env, "DURAFKA_METRICS_PORT": str(free_port())},
                mounts=[APP_MODULE],
                image=compiled_image,
            )
        _start_all(client, list(expected), 200.0)
        _wait(lambda: count_completed(client, expected) == len(expected), containers)
    assert_completed_exactly_once(client_app, expected)
    client_app.close()
    build = f"compiled ({len(listed_in_setup())} modules)"
    for name in containers.names:
        assert build in containers.logs(name), containers.logs(name)[-3000:]
    no_compiler = containers.podman.run(
        "run",
        "--rm",
        "--network",
        "host",
        *containers.podman.limits(),
        "--entrypoint",
        "sh",
        compiled_image,
        "-c",
        "command -v gcc cc || echo none",
        check=False,
    )
    assert no_compiler.stdout.strip() == "none", no_compiler.stdout


def _new_hub(kafka_bootstrap: str) -> tuple[durafka.App, dict[str, str]]:
    """A fresh task hub's topics; a client app of containerapp's functions on it, and
    the containers' environment for it."""
    hub = f"c{uuid.uuid4().hex[:8]}"
    apply_topics(admin_client(kafka_bootstrap), load_hub_spec(hub, partitions=PARTITIONS))
    env = {
        "DURAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DURAFKA_TASK_HUB": hub,
        "DURAFKA_PARTITIONS": str(PARTITIONS),
    }
    client_app = durafka.App(
        settings=Settings(task_hub=hub, bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS)
    )
    client_app.registry = containerapp.app.registry
    return client_app, env


def _start_all(client: Client, ids: list[str], per_second: float) -> None:
    began = time.monotonic()
    for n, iid in enumerate(ids):
        client.start_new(containerapp.order, iid, instance_id=iid)
        time.sleep(max(0.0, began + n / per_second - time.monotonic()))


def _wait(done: Callable[[], bool], containers: Containers, timeout: float = 120.0) -> None:
    """Wait until ``done()``; fail at once if a container stopped (with its log)."""
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while not done():
        if time.monotonic() - checked > 2.0:  # podman inspect costs a process each time
            checked = time.monotonic()
            for name in containers.names:
                if not containers.running(name):
                    tail = containers.logs(name)[-3000:]
                    raise AssertionError(f"container {name} stopped:\n{tail}")
        assert time.monotonic() < deadline, f"not done within {timeout:.0f} s"
        time.sleep(0.2)
