"""testcontainers for real: a broker container over Podman's Docker API, as users' tests get it.

``durafka_kafka`` is the fixture of :mod:`durafka.dev.pytest_plugin` (enabled in
tests/conftest.py as a user enables it in theirs). One test per run goes this
way; the rest of the session uses the session broker.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import durafka
from durafka.settings import Settings
from tests.deploy import containerapp

# The first run on a machine installs Podman and builds the Kafka image (minutes).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]


def test_an_app_runs_on_the_broker_container_of_the_fixture(
    durafka_kafka: str, tmp_path: Path
) -> None:
    app = durafka.App(
        settings=Settings(
            task_hub=f"tc{uuid.uuid4().hex[:8]}",
            bootstrap_servers=durafka_kafka,
            state_dir=tmp_path / "state",
            partitions=2,
        )
    )
    app.registry = containerapp.app.registry
    try:
        with app.running(), app.sync_client() as client:
            iid = client.start_new(containerapp.order, "tc-1", instance_id="tc-1")
            assert client.wait_for_completion(iid, timeout=60) == "c-r-tc-1"
            events = [e.kind.value for e in client.get_history(iid)]
    finally:
        app.close()
    assert events.count("TASK_COMPLETED") == 2
