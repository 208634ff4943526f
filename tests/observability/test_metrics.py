"""The metrics of an app running in this process (processor and worker), on both transports."""

from __future__ import annotations

import re
import signal
import socket
import uuid
from collections.abc import Callable

import pytest

import durafka
from durafka.client import Client
from durafka.entities import EntityId
from durafka.errors import ConfigurationError
from durafka.hosting import Runner
from durafka.partitioning import partition_for
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from tests.observability import apps
from tests.observability.scrape import Metrics, probe, scrape, wait_for
from tests.support.cli import start_cli

N = 10


def metrics_app(app_factory: Callable[..., durafka.App], **overrides: object) -> durafka.App:
    return app_factory(metrics_port=0, metrics_host="127.0.0.1", **overrides)


def test_a_scrape_counts_what_the_app_did(app_factory: Callable[..., durafka.App]) -> None:
    # No automatic purge: its timers would be pending too.
    app = metrics_app(app_factory, finished_retention_ms=0)
    topics = HubTopics(app.settings.task_hub)
    with app.running() as runner, app.sync_client() as client:
        port = runner.metrics_port
        assert port is not None
        wait_for("/readyz", lambda: probe(port, "/readyz")[0] == 200)
        ids = [client.start_new(apps.greeting, f"n{i}") for i in range(N)]
        for iid in ids:
            assert client.wait_for_status(iid, timeout=60).runtime_status is RuntimeStatus.COMPLETED
        waiting = client.start_new(apps.waits_for_event)
        napping = client.start_new(apps.napping, 3_600_000)
        client.terminate(waiting, "enough")
        assert client.wait_for_status(waiting, timeout=60).runtime_status is (
            RuntimeStatus.TERMINATED
        )
        tally = EntityId("Tally", "t")
        for _ in range(3):
            client.signal_entity(tally, "add", 1)
        client.signal_entity(tally, "fail")
        key = b"garbage-key"
        producer = app.transport.producer()
        producer.produce(
            topics.orchestrations, partition_for(key, app.settings.partitions), key, b"not avro"
        )
        assert producer.flush(10) == 0
        producer.close()

        def settled(m: Metrics) -> bool:
            return (
                m.value("durafka_entity_operations_total", entity="Tally", outcome="failed") == 1
                and m.total("durafka_dead_letters_total") == 1
                and m.total("durafka_timers_pending") == 1
                and m.value("durafka_orchestrations_started_total", orchestration="napping") == 1
            )

        # The first scrape asks the processor to count its timers; a later one shows it.
        wait_for("every effect counted", lambda: settled(scrape(port)))
        m = scrape(port)
        assert client.get_status(napping) is not None

    assert m.value("durafka_orchestrations_started_total", orchestration="greeting") == N
    assert (
        m.value("durafka_orchestrations_ended_total", orchestration="greeting", status="completed")
        == N
    )
    assert (
        m.value(
            "durafka_orchestrations_ended_total",
            orchestration="waits_for_event",
            status="terminated",
        )
        == 1
    )
    assert m.value("durafka_entity_operations_total", entity="Tally", outcome="ok") == 3
    assert (
        m.value("durafka_dead_letters_total", topic=topics.orchestrations, reason="DecodeError")
        == 1
    )
    # Local activities (processor) and the worker's add up in one series.
    assert m.value("durafka_activity_executions_total", activity="greet") >= N
    assert m.value("durafka_owned_partitions", role="processor", topic=topics.orchestrations) == (
        app.settings.partitions
    )
    # One family per name, though two roles write some of them.
    types = re.findall(r"^# TYPE (\S+) ", m.text, flags=re.MULTILINE)
    assert len(types) == len(set(types))
    assert runner.metrics_port is None  # stopped with the runner


def test_unregistered_names_share_one_label(app_factory: Callable[..., durafka.App]) -> None:
    """Names from records of other services cannot grow the label set without bound."""
    app = metrics_app(app_factory)
    app.ensure_topics()
    # A client without a registry, as another service has: it sends any name.
    with app.running() as runner, Client(app.settings, transport=app.transport) as client:
        port = runner.metrics_port
        assert port is not None
        for i in range(3):
            iid = client.start_new(f"no_such_orchestration_{i}")
            assert client.wait_for_status(iid, timeout=60).runtime_status is RuntimeStatus.FAILED
        wait_for(
            "the failed starts",
            lambda: (
                scrape(port).value(
                    "durafka_orchestrations_ended_total",
                    orchestration="<unregistered>",
                    status="failed",
                )
                == 3
            ),
        )
        started = scrape(port).series("durafka_orchestrations_started_total")
    assert list(started.values()) == [3]
    assert [dict(labels) for labels in started] == [{"orchestration": "<unregistered>"}]


def test_readiness_and_health_follow_the_runner(app_factory: Callable[..., durafka.App]) -> None:
    app = metrics_app(app_factory)
    runner = app.runner()
    assert runner.readiness()[0] is False  # nothing runs yet
    runner.start()
    try:
        port = runner.metrics_port
        assert port is not None
        wait_for("/readyz", lambda: probe(port, "/readyz")[0] == 200)
        code, health = probe(port, "/healthz")
        assert code == 200
        assert set(health["roles"]) == {"processor", "worker"}
        assert all(role["running"] for role in health["roles"].values())
    finally:
        runner.stop()
    assert runner.health()[0] is False
    assert runner.readiness()[0] is False


def test_a_taken_port_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        runner = Runner(metrics_port=taken.getsockname()[1], metrics_host="127.0.0.1")
        with pytest.raises(ConfigurationError, match="--metrics-port"):
            runner.start()
        runner.stop()


def test_the_metrics_port_option_of_a_role_command() -> None:
    """``durafka run APP --metrics-port 0`` (explicit memory://) serves the probes."""
    proc = start_cli(
        "run",
        "tests.observability.apps:app",
        "--bootstrap",
        f"memory://{uuid.uuid4().hex[:8]}",
        "--metrics-port",
        "0",
        env={"DURAFKA_METRICS_HOST": "127.0.0.1"},
    )
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            found = re.search(r"metrics on :(\d+)/metrics", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None, "the command did not say where it serves its metrics"
        wait_for("/readyz", lambda: probe(port, "/readyz")[0] == 200)
        assert probe(port, "/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
