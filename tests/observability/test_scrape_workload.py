"""The numbers a Prometheus scrape shows, against what happened (real broker, role processes).

A processor and a worker run as child processes (``durafka processor`` and
``durafka worker`` with ``DURAFKA_METRICS_PORT``), as deployed; the test
scrapes their endpoints before, during and after a workload and compares every
number with the workload it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durafka.status import RuntimeStatus
from durafka.topology import HubTopics, TopicSpec
from tests.observability import apps
from tests.observability.hosts import start_roles
from tests.observability.scrape import Metrics, probe, scrape, wait_for
from tests.support.apps import make_app
from tests.support.processes import RoleLauncher, RoleProcess

APP = "tests.observability.apps:app"
PARTITIONS = 4
GREETINGS = 20
RETRYING = 2


def metrics_port(role: RoleProcess) -> int:
    """The port the role serves its metrics on (it prints it once it listens)."""
    return int(role.wait_for_log(r"metrics on :(\d+)/metrics").group(1))


def lag_is_zero(m: Metrics, topic: str) -> bool:
    lag = {
        dict(labels)["partition"]: v
        for labels, v in m.series("durafka_consumer_lag").items()
        if dict(labels)["topic"] == topic
    }
    return len(lag) == PARTITIONS and not any(lag.values())


@pytest.mark.slow
def test_a_scrape_matches_the_workload(
    kafka_bootstrap: str,
    hub: str,
    kafka_hub_topics: list[TopicSpec],
    tmp_path: Path,
    roles: RoleLauncher,
) -> None:
    topics = HubTopics(hub)
    processor, worker = start_roles(
        roles,
        APP,
        kafka_bootstrap,
        hub,
        tmp_path,
        DURAFKA_METRICS_PORT="0",
        DURAFKA_METRICS_HOST="127.0.0.1",
    )
    p_port, w_port = metrics_port(processor), metrics_port(worker)

    # Ready: the processor once its partitions are assigned and restored.
    wait_for("the processor's /readyz", lambda: probe(p_port, "/readyz")[0] == 200)
    _, ready = probe(p_port, "/readyz")
    assert ready["roles"]["processor"]["partitions"] == list(range(PARTITIONS))
    assert scrape(p_port).value("durafka_restores_total") == PARTITIONS
    wait_for("the worker's /readyz", lambda: probe(w_port, "/readyz")[0] == 200)
    assert probe(p_port, "/healthz")[0] == 200
    assert probe(w_port, "/healthz")[0] == 200

    app = make_app(kafka_bootstrap, hub, tmp_path / "client", apps.app.registry, partitions=4)
    with app.sync_client() as client:
        greetings = [client.start_new(apps.greeting, f"n{i}") for i in range(GREETINGS)]
        failing = [client.start_new(apps.retrying, i) for i in range(RETRYING)]
        during = scrape(p_port)  # answers while the processor works
        assert (
            during.value("durafka_owned_partitions", role="processor", topic=topics.orchestrations)
            == PARTITIONS
        )
        for iid in greetings:
            assert client.wait_for_status(iid, timeout=60).runtime_status is (
                RuntimeStatus.COMPLETED
            )
        for iid in failing:
            assert client.wait_for_status(iid, timeout=60).runtime_status is (RuntimeStatus.FAILED)
    app.close()

    # Every committed offset catches up with the end of its partition.
    wait_for("processor lag 0", lambda: lag_is_zero(scrape(p_port), topics.orchestrations))
    wait_for("worker lag 0", lambda: lag_is_zero(scrape(w_port), topics.activities))
    p, w = scrape(p_port), scrape(w_port)

    assert p.value("durafka_orchestrations_started_total", orchestration="greeting") == GREETINGS
    assert p.value("durafka_orchestrations_started_total", orchestration="retrying") == RETRYING
    assert (
        p.value("durafka_orchestrations_ended_total", orchestration="greeting", status="completed")
        == GREETINGS
    )
    assert (
        p.value("durafka_orchestrations_ended_total", orchestration="retrying", status="failed")
        == RETRYING
    )
    assert (
        p.value(
            "durafka_orchestration_duration_seconds_count",
            orchestration="greeting",
            status="completed",
        )
        == GREETINGS
    )
    # A start step and a result step per greeting at least.
    assert p.value("durafka_orchestration_step_seconds_count", orchestration="greeting") >= (
        2 * GREETINGS
    )
    # Retries are the orchestrator's: exactly the attempts after the first.
    assert p.value("durafka_activity_retries_total", activity="flaky") == RETRYING * (
        apps.FLAKY_ATTEMPTS - 1
    )
    # Each retry waits on a durable timer.
    assert p.value("durafka_timers_fired_total") == RETRYING * (apps.FLAKY_ATTEMPTS - 1)
    assert p.value("durafka_transactions_total", role="processor", outcome="committed") > 0
    assert p.total("durafka_dead_letters_total") == 0

    # Activities run in the worker process (at least once each).
    assert w.value("durafka_activity_executions_total", activity="greet") >= GREETINGS
    assert w.value("durafka_activity_duration_seconds_count", activity="greet") >= GREETINGS
    assert w.value("durafka_activity_failures_total", activity="greet") == 0
    assert w.value("durafka_activity_executions_total", activity="flaky") >= RETRYING * (
        apps.FLAKY_ATTEMPTS
    )
    assert w.value("durafka_activity_failures_total", activity="flaky") >= RETRYING * (
        apps.FLAKY_ATTEMPTS
    )
    assert w.value("durafka_owned_partitions", role="worker", topic=topics.activities) == (
        PARTITIONS
    )
    assert w.value("durafka_transactions_total", role="worker", outcome="committed") > 0
    assert w.value("durafka_activities_running") == 0
    # The processor runs no activity itself here (it is alone in its process).
    assert p.total("durafka_activity_executions_total") == 0
    assert "process_cpu_seconds_total" in p.text

    assert probe(p_port, "/healthz")[0] == 200
    assert probe(w_port, "/healthz")[0] == 200
    processor.stop()
    worker.stop()
