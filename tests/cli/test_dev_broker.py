"""Every command that needs a cluster finds the dev broker running from its directory.

``durafka dev-broker start`` keeps its broker in ``.durafka/dev-broker``. Without
``--bootstrap`` or ``DURAFKA_BOOTSTRAP_SERVERS``, the roles, the client commands and
the management commands all use the one running from their working directory, and
say so on stderr. This module starts one real broker of its own (beside the
session's) in a temporary project directory, for all its tests.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from durafka.cli.options import DEV_BROKER_DIR
from durafka.dev.broker import LocalBroker, free_port
from tests.support.cli import run_cli, serving

HELLO = "examples.hello:app"
#: What a command says on stderr when it picked the dev broker.
PICKED = "using the dev broker of this directory at "


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory with a dev broker running from it, and that broker's address."""
    directory = tmp_path_factory.mktemp("project")
    broker = LocalBroker(directory / DEV_BROKER_DIR)
    bootstrap = broker.start()
    try:
        yield directory, bootstrap
    finally:
        broker.stop()


def test_roles_clients_and_management_use_the_dev_broker_of_their_directory(
    project: tuple[Path, str],
) -> None:
    # Before: `durafka run` refused ("no Kafka cluster given"); only the management
    # commands looked for the dev broker.
    directory, bootstrap = project
    err_path = directory / "run.stderr"
    with serving("run", HELLO, stderr=err_path, cwd=directory, timeout=120) as roles:
        assert f"{PICKED}{bootstrap}" in err_path.read_text()

        started = run_cli(
            "start", HELLO, "hello_world", '"World"', "--wait", "--json", cwd=directory, timeout=120
        )
        assert started.returncode == 0, started.stderr
        assert started.stderr.count(PICKED) == 1, started.stderr
        status = json.loads(started.stdout)
        assert (status["status"], status["output"]) == ("COMPLETED", "Hello, World!")

        listed = run_cli("list", "--app", HELLO, "--json", cwd=directory, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert f"{PICKED}{bootstrap}" in listed.stderr
        ids = [item["instance_id"] for item in json.loads(listed.stdout)["items"]]
        assert status["instance_id"] in ids

        roles.send_signal(signal.SIGTERM)
        assert roles.wait(timeout=60) == 0, err_path.read_text()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["status", HELLO, "some-id"], id="status"),
        pytest.param(["list"], id="list"),
    ],
)
def test_a_named_cluster_wins_over_the_dev_broker(
    project: tuple[Path, str], args: list[str]
) -> None:
    directory, _ = project
    named = f"127.0.0.1:{free_port()}"  # nothing listens: the command must try it
    done = run_cli(*args, env={"DURAFKA_BOOTSTRAP_SERVERS": named}, cwd=directory, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot reach Kafka at {named}" in done.stderr
    assert PICKED not in done.stderr


def test_the_benchmark_on_kafka_uses_the_dev_broker(project: tuple[Path, str]) -> None:
    # Before: `durafka bench --transport kafka` (and `bench compare`) refused with
    # "--transport kafka needs a cluster" although its help named the dev broker.
    directory, bootstrap = project
    done = run_cli(
        "bench",
        "W1",
        "--transport",
        "kafka",
        "--n",
        "3",
        "--latency-n",
        "0",
        cwd=directory,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "W1 throughput" in done.stdout
    assert bootstrap in done.stdout  # each run's header names its cluster
