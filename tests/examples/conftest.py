"""Fixtures of the sample tests: a sample's app on the real broker, and running a sample."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

import durafka
from durafka.client import Client
from tests.support.apps import make_app

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def on_kafka(
    kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Callable[[durafka.App], AbstractContextManager[Client]]]:
    """``with on_kafka(sample.app) as client:``: the sample running on the real broker.

    A copy of the sample's app on a fresh task hub (4 partitions), with a processor
    and a worker in this process, and a sync client.
    """
    made: list[durafka.App] = []

    @contextmanager
    def run(sample: durafka.App) -> Iterator[Client]:
        app = make_app(
            kafka_bootstrap, f"x{uuid.uuid4().hex[:10]}", tmp_path / "state", sample.registry
        )
        made.append(app)
        with app.running(), app.sync_client() as client:
            yield client

    yield run
    for app in made:
        app.close()


def run_sample(module: str, timeout: float = 60.0) -> str:
    """Run ``python -m <module>`` (on memory://) from the repository root; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{module} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout
