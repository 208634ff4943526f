"""``max_concurrent_orchestrations``: instances stepped per batch at most; the rest wait
their turn, in partition order, and lose nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import durafka
from durafka import OrchestrationContext
from durafka.client import Client
from durafka.registry import Registry
from durafka.status import RuntimeStatus
from tests.support.apps import make_app

registry = Registry()


async def greet(ctx: OrchestrationContext, name: str) -> str:
    """Completes in its first step."""
    return f"hello {name}"


registry.add_orchestration(greet)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[durafka.App]:
    app = make_app(
        f"memory://{uuid.uuid4().hex[:8]}",
        f"t{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        registry,
        partitions=1,
        max_concurrent_orchestrations=2,
    )
    app.ensure_topics()
    yield app
    app.close()


def test_a_batch_steps_at_most_max_concurrent_orchestrations_instances(app: durafka.App) -> None:
    client = Client(app.settings, app.registry, app.transport)
    proc = app.processor()
    proc.start()
    proc.run_once(poll_timeout=0.01)  # assignment and restore
    ids = [client.start_new(greet, f"n{i}", instance_id=f"g{i}") for i in range(5)]

    def completed() -> list[str]:
        return [
            iid
            for iid in ids
            if (st := client.get_status(iid)) is not None
            and st.runtime_status is RuntimeStatus.COMPLETED
        ]

    proc.run_once(poll_timeout=0.5)
    assert client.status_view.wait_for("g1", lambda s: s.is_terminal, 5)
    assert completed() == ["g0", "g1"], "the first batch steps two instances, in order"
    proc.run_once(poll_timeout=0.5)
    client.status_view.wait_for("g3", lambda s: s.is_terminal, 5)
    assert completed() == ["g0", "g1", "g2", "g3"]
    proc.run_once(poll_timeout=0.5)
    client.status_view.wait_for("g4", lambda s: s.is_terminal, 5)
    assert client.wait_for_completion("g4", timeout=5) == "hello n4"
    proc.close()
    client.close()
