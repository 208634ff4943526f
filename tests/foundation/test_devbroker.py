"""The Docker-free dev broker: fetch once, start, find across processes, stop.

These start brokers of their own (beside the session's) on free ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

import durafka.dev.broker as devbroker
from durafka.dev.broker import DEFAULT_KAFKA_VERSION, LocalBroker, ensure_distribution
from durafka.errors import BrokerUnavailableError
from tests.support.kafka import consume_until, create_topic, values


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durafka.cli", "dev-broker", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def test_cli_start_then_status_and_stop_from_other_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    started = _cli("start", "--data-dir", str(data_dir))
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:")

    # The CLI process has exited; the broker runs on, found through its data dir.
    status = LocalBroker(data_dir).status()
    assert status.running and status.bootstrap == bootstrap and status.pid is not None
    assert _port_open(bootstrap)
    assert "Kafka Server started" in status.log_file.read_text(), "the broker log is empty"

    again = _cli("start", "--data-dir", str(data_dir))
    assert again.returncode == 0 and again.stdout.strip() == bootstrap
    assert LocalBroker(data_dir).status().pid == status.pid  # found, not started twice

    shown = _cli("status", "--data-dir", str(data_dir))
    assert shown.returncode == 0 and f"running at {bootstrap} (pid {status.pid})" in shown.stdout

    stopped = _cli("stop", "--data-dir", str(data_dir))
    assert stopped.returncode == 0 and f"stopped (pid {status.pid})" in stopped.stdout
    assert _gone(status.pid)
    assert not _port_open(bootstrap)
    assert not (data_dir / "broker.pid").exists()

    after = _cli("status", "--data-dir", str(data_dir))
    assert after.returncode == 1 and "not running" in after.stdout


def test_a_restarted_broker_keeps_its_port_and_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    with LocalBroker(data_dir) as broker:
        bootstrap = broker.bootstrap
        assert bootstrap is not None
        topic = create_topic(bootstrap, "kept")
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, value=b"survives a restart", partition=0)
        assert producer.flush(30) == 0
        del producer  # no reconnect attempts while the broker is down
        assert broker.log_tail(5).count("\n") == 4
    assert not broker.status().running

    restarted = LocalBroker(data_dir)
    try:
        assert restarted.start() == bootstrap
        seen = values(consume_until(bootstrap, topic, lambda rs: len(rs) >= 1))
        assert seen == ["survives a restart"]
    finally:
        assert restarted.stop()
    assert not restarted.stop(), "a second stop has nothing to stop"


def test_a_broker_dying_during_startup_fails_fast_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone grabs the controller port after it was checked: Kafka cannot bind it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(devbroker, "_port_is_free", lambda port: True)
        broker = LocalBroker(tmp_path / "broker", controller_port=taken.getsockname()[1])
        began = time.monotonic()
        with pytest.raises(BrokerUnavailableError) as caught:
            broker.start(timeout=60)
    assert time.monotonic() - began < 30, "a dead broker must not wait for the deadline"
    message = str(caught.value)
    assert "exited with code" in message
    assert "Address already in use" in message  # the log tail is in the error
    assert not broker.status().running
    assert not broker.pid_file.exists()


def test_a_given_port_that_is_taken_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        broker = LocalBroker(tmp_path / "broker", port=taken.getsockname()[1])
        with pytest.raises(BrokerUnavailableError, match="already in use"):
            broker.start()


def test_ensure_distribution_fetches_once_then_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = ensure_distribution(DEFAULT_KAFKA_VERSION, tmp_path)
    assert libs == tmp_path / f"kafka-{DEFAULT_KAFKA_VERSION}" / "libs"
    jars = {p.name for p in libs.iterdir()}
    assert f"kafka_2.13-{DEFAULT_KAFKA_VERSION}.jar" in jars
    assert f"kafka-clients-{DEFAULT_KAFKA_VERSION}.jar" in jars
    # slf4j 1.7 (what Kafka pins) needs the slf4j-1 binding, or the broker logs nothing.
    assert any(j.startswith("log4j-slf4j-impl-") for j in jars), sorted(jars)
    assert [p.name for p in tmp_path.iterdir()] == [f"kafka-{DEFAULT_KAFKA_VERSION}"]

    def no_maven(version: str, output_dir: Path) -> None:
        raise AssertionError("Maven ran although the distribution was cached")

    monkeypatch.setattr(devbroker, "_run_maven", no_maven)
    assert ensure_distribution(DEFAULT_KAFKA_VERSION, tmp_path) == libs


def test_an_interrupted_download_leaves_nothing_that_looks_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_download(version: str, output_dir: Path) -> None:
        output_dir.mkdir(parents=True)
        (output_dir / "scala-library-2.13.16.jar").write_bytes(b"partial")
        raise BrokerUnavailableError("network gone")

    monkeypatch.setattr(devbroker, "_run_maven", half_download)
    with pytest.raises(BrokerUnavailableError, match="network gone"):
        ensure_distribution("4.1.1", tmp_path)
    assert list(tmp_path.iterdir()) == []
