"""The commands never mislead: a named cluster, one name per setting, shared options.

Every command runs in a fresh process with no ``DURAFKA_*`` variable but the
ones a test gives (tests/support/cli.py), as a new user's shell would. The
dev broker a command finds in its directory is tested in test_dev_broker.py.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

import durafka
import durafka.settings
from durafka.cli import app as cli
from durafka.settings import Settings
from tests.support.cli import cli_env, run_cli, serving
from tests.support.processes import REPO_ROOT
from tests.support.waiting import wait_until

HELLO = "examples.hello:app"

#: Commands that talk to a cluster: each must be told where it is.
CLUSTER_COMMANDS = [
    pytest.param(["start", HELLO, "hello_world", '"World"'], id="start"),
    pytest.param(["status", HELLO, "some-id"], id="status"),
    pytest.param(["run", HELLO], id="run"),
    pytest.param(["processor", HELLO], id="processor"),
    pytest.param(["worker", HELLO], id="worker"),
    pytest.param(["topology", "apply"], id="topology-apply"),
]
#: Management commands: the same rule, the same error.
MANAGEMENT_COMMANDS = [
    pytest.param(["list"], id="list"),
    pytest.param(["dead-letters", "list"], id="dead-letters-list"),
    pytest.param(["topology", "describe"], id="topology-describe"),
    pytest.param(["export", "status"], id="export-status"),
    pytest.param(["serve", HELLO, "--insecure-local"], id="serve"),
]


@pytest.fixture(autouse=True)
def _warn_again() -> Iterator[None]:
    # Settings warns once per process; each test here wants to see its warning.
    durafka.settings._warned.clear()
    yield
    durafka.settings._warned.clear()


@pytest.mark.parametrize("args", CLUSTER_COMMANDS + MANAGEMENT_COMMANDS)
def test_a_command_without_a_cluster_fails_saying_how_to_name_one(
    args: list[str], tmp_path: Path
) -> None:
    # Before: start printed an id and exited 0 (the instance lived in a memory:// broker
    # that ended with the process), run/processor/worker served that broker forever;
    # later the management commands said it in words of their own and exited 1.
    # In an empty directory: no dev broker runs from it (a production pod's case).
    done = run_cli(*args, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("error: no Kafka cluster given"), done.stderr
    assert "DURAFKA_BOOTSTRAP_SERVERS=host:port" in done.stderr
    assert "--bootstrap host:port" in done.stderr
    assert "`durafka dev-broker start` in this directory" in done.stderr
    roles = args[0] in ("run", "processor", "worker")
    assert ("--bootstrap memory://" in done.stderr) == roles, done.stderr


@pytest.mark.parametrize("args", CLUSTER_COMMANDS[:2])
def test_start_and_status_refuse_the_in_process_broker(args: list[str]) -> None:
    done = run_cli(*args, env={"DURAFKA_BOOTSTRAP_SERVERS": "memory://"})
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "no processor or other command can see" in done.stderr


def test_every_command_takes_the_shared_options() -> None:
    def commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        subcommands = getattr(command, "commands", None)  # a group (typer's own click)
        if subcommands:
            for name, sub in subcommands.items():
                yield from commands(sub, (*path, name))
        else:
            yield path, command

    found = list(commands(typer.main.get_command(cli), ()))
    assert len(found) >= 12
    for path, command in found:
        options = {opt for param in command.params for opt in param.opts}
        assert {"--log-level", "--log-format"} <= options, path
        # The local broker and the partition planner talk to no cluster.
        if path[0] not in ("dev-broker", "deploy"):
            assert {"--bootstrap", "--hub"} <= options, path


def test_the_old_variable_still_names_the_cluster_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DURAFKA_BOOTSTRAP", "kafka-a:9092")
    with caplog.at_level(logging.WARNING, logger="durafka.settings"):
        settings = Settings(**{})
    assert settings.bootstrap_servers == "kafka-a:9092"
    assert "DURAFKA_BOOTSTRAP is deprecated: use DURAFKA_BOOTSTRAP_SERVERS" in caplog.text
    monkeypatch.setenv("DURAFKA_BOOTSTRAP_SERVERS", "kafka-b:9092")
    assert Settings(**{}).bootstrap_servers == "kafka-b:9092"  # the new name wins
    monkeypatch.setenv("DURAFKA_BOOTSTRAP_SERVERS", "")
    assert Settings(**{}).bootstrap_servers == "kafka-a:9092"  # empty means unset


def test_an_app_in_user_code_without_a_cluster_runs_in_process_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = durafka.App("mine")
    assert app.settings.bootstrap_servers is None
    with caplog.at_level(logging.WARNING, logger="durafka.settings"):
        assert app.settings.bootstrap == "memory://"
    assert "DURAFKA_BOOTSTRAP_SERVERS is not set" in caplog.text
    assert durafka.App("explicit", bootstrap_servers="memory://").settings.is_memory


def test_the_demo_still_runs_without_any_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.hello"],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hello, World!"
    assert "DURAFKA_BOOTSTRAP_SERVERS is not set" in done.stderr


def test_a_role_on_an_explicit_memory_broker_logs_json_lines(tmp_path: Path) -> None:
    err_path = tmp_path / "stderr"
    memory = {"DURAFKA_BOOTSTRAP_SERVERS": "memory://"}
    with serving("run", HELLO, "--log-format", "json", stderr=err_path, env=memory) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, err_path.read_text()
    entries = [json.loads(line) for line in err_path.read_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    messages = {(e["level"], e["message"].split(":")[0]) for e in entries}
    assert ("warning", "running on memory") in messages  # says no one else can reach it
    started = [e["message"] for e in entries if e["message"].startswith("serving task hub")]
    # Which durafka serves, and which build of it (the checkout: pure Python).
    assert started and started[0].startswith("serving task hub 'hello'"), entries
    assert f"durafka {durafka.__version__}, pure Python)" in started[0], started


@pytest.mark.parametrize("role", ["run", "processor", "worker"])
def test_a_role_stopped_while_its_app_loads_exits_cleanly(role: str, tmp_path: Path) -> None:
    # Before: the SIGTERM handler came after the app's import and the runner's
    # creation, so a pod deleted (or a soak role stopped) while it started died by
    # the signal (-15) instead of exiting 0.
    loading = tmp_path / "loading"
    (tmp_path / "slow_app.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(loading)!r}).touch()\n"
        "time.sleep(120)  # an app whose imports take long\n"
        "from examples.hello import app\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "durafka.cli", role, "slow_app:app"],
        cwd=tmp_path,  # the app's module is found from the working directory
        env=cli_env({"DURAFKA_BOOTSTRAP_SERVERS": "memory://"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(loading.exists, timeout=60, what="the app to start loading")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # not the 120 s the import would take
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped while starting (SIGTERM or Ctrl-C): nothing was served" in err
    assert "Traceback" not in err, err


def test_the_deploy_planner_reads_the_partition_count_from_the_topology() -> None:
    # Settings.partitions no longer disagrees with topology/default.toml (12).
    done = run_cli("deploy", "plan", "--pods", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0-2", "3-5", "6-8", "9-11"]
    env = {"DURAFKA_PARTITIONS": "8"}
    assert run_cli("deploy", "plan", "--pods", "2", env=env).stdout.split() == ["0-3", "4-7"]
