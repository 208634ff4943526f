"""``durafka topology apply`` and the roles read one partition count, one spec.

Before: ``topology apply`` created 12 partitions (topology/default.toml) and
``durafka run`` then failed on that hub, because ``Settings.partitions`` said 8.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cli import cli_env, run_cli
from tests.support.processes import REPO_ROOT

HELLO = "examples.hello:app"


def test_a_hub_applied_by_default_is_the_hub_run_expects(
    kafka_bootstrap: str, hub: str, tmp_path: Path
) -> None:
    env = {"DURAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DURAFKA_STATE_DIR": str(tmp_path)}
    applied = run_cli("topology", "apply", "--hub", hub, env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"created    {hub}.orchestrations (partitions: 12)" in applied.stdout

    log = tmp_path / "run.log"
    with log.open("w") as out:
        role = subprocess.Popen(
            [sys.executable, "-m", "durafka.cli", "run", HELLO, "--hub", hub],
            cwd=REPO_ROOT,
            env=cli_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = run_cli(
            "start", HELLO, "hello_world", '"World"', "--hub", hub, "--wait", "--json", env=env
        )
        assert started.returncode == 0, f"{started.stderr}\n{log.read_text()}"
        assert '"output": "Hello, World!"' in started.stdout
        status = run_cli("status", HELLO, started.stdout.split('"')[3], "--hub", hub, env=env)
        assert status.returncode == 0, status.stderr
        assert "status           COMPLETED" in status.stdout
    finally:
        role.send_signal(signal.SIGTERM)
        try:
            role.wait(timeout=60)
        except subprocess.TimeoutExpired:
            role.kill()
            role.wait()
    assert role.returncode == 0, log.read_text()
    assert "differ from the topology spec" not in log.read_text()


def test_a_hub_with_another_partition_count_is_a_clear_error(
    kafka_bootstrap: str, hub: str
) -> None:
    env = {"DURAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    applied = run_cli("topology", "apply", "--hub", hub, "--partitions", "3", env=env)
    assert applied.returncode == 0, applied.stderr

    done = run_cli("start", HELLO, "hello_world", '"World"', "--hub", hub, env=env)
    assert done.returncode == 2, done.stderr
    assert f"{hub}.orchestrations: partition count expected 12, actual 3" in done.stderr
    assert "DURAFKA_PARTITIONS" in done.stderr
    # Told the count the hub was made with, the same command works.
    env["DURAFKA_PARTITIONS"] = "3"
    done = run_cli("start", HELLO, "hello_world", '"World"', "--hub", hub, env=env)
    assert done.returncode == 0, done.stderr


def test_the_roles_read_the_spec_topology_apply_was_given(kafka_bootstrap: str, hub: str) -> None:
    # production.toml asks for 3 replicas, which a one-broker cluster cannot hold: the
    # error proves the spec was read (before: Settings.replication_factor=1 overrode it).
    path = REPO_ROOT / "topology" / "production.toml"
    env = {"DURAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DURAFKA_TOPOLOGY": str(path)}
    done = run_cli("start", HELLO, "hello_world", '"World"', "--hub", hub, env=env)
    assert done.returncode == 2, done.stderr
    assert "replication factor" in done.stderr.lower()
