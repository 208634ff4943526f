"""Repairing instances: rewind a failed one, reset one to an earlier event (issue 16)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import durafka
from durafka.errors import RewindError
from durafka.management import Management
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.status import RuntimeStatus
from tests.features import repair_apps
from tests.features.helpers import count, status_records
from tests.features.repair_apps import runs


@pytest.fixture
def app_registry() -> Registry:
    return repair_apps.app.registry


def _status(client: durafka.Client, iid: str, status: RuntimeStatus) -> None:
    client.wait_for_status(iid, timeout=60)
    from tests.support.waiting import wait_until

    wait_until(
        lambda: (s := client.get_status(iid)) is not None and s.runtime_status is status,
        timeout=60,
        what=f"{iid} {status.value}",
    )


def test_rewind_retries_failed_activities_and_children_and_keeps_the_rest(
    app_factory: Callable[..., durafka.App], tmp_path: Path
) -> None:
    app = app_factory()
    d = str(tmp_path)
    (tmp_path / "charge.broken").touch()
    with app.running(), app.sync_client() as client, Management.for_app(app) as m:
        iid = client.start_new("saga", d, instance_id="order-1")
        _status(client, iid, RuntimeStatus.FAILED)
        assert (runs(tmp_path, "reserve"), runs(tmp_path, "charge")) == (1, 1)

        # Still broken: the rewind retries charge, which fails again.
        m.rewind(iid, "try again")
        from tests.support.waiting import wait_until

        wait_until(lambda: runs(tmp_path, "charge") == 2, timeout=60, what="charge retried")
        _status(client, iid, RuntimeStatus.FAILED)

        # Mended charge, broken child: a rewind of the rewind; the child fails the parent.
        (tmp_path / "charge.broken").unlink()
        (tmp_path / "child-step.broken").touch()
        m.rewind(iid, "charge is fixed")
        wait_until(lambda: runs(tmp_path, "child-step") == 1, timeout=60, what="child ran")
        _status(client, iid, RuntimeStatus.FAILED)
        failed = client.get_status(iid)
        assert failed is not None and failed.failure_details is not None
        assert "SubOrchestrationFailed" in failed.failure_details.error_type

        # Mended child: rewinding the parent rewinds the failed child.
        (tmp_path / "child-step.broken").unlink()
        client.rewind(iid, "child is fixed")
        assert client.wait_for_completion(iid, timeout=60) == ["reserve", "charge", "child-step"]
        assert runs(tmp_path, "reserve") == 1  # what succeeded was kept
        assert (runs(tmp_path, "charge"), runs(tmp_path, "child-step")) == (3, 2)
        history = client.get_history(iid)
        assert count(history, EventKind.EXECUTION_REWOUND) == 3
        assert count(history, EventKind.TASK_FAILED) == 2  # failures stay in the history
        child = f"{iid}:" + history[1].execution_id[:8] + ":2"  # type: ignore[index]
        assert count(client.get_history(child), EventKind.EXECUTION_REWOUND) == 1
        statuses = [
            s.runtime_status for s in status_records(app.transport, app.settings.task_hub, iid) if s
        ]
        assert statuses.count(RuntimeStatus.FAILED) == 3

        # A rewind a completed instance, or one that failed in its own code, is refused.
        with pytest.raises(RewindError, match="only a Failed instance"):
            m.rewind(iid)
        bug = client.start_new("broken_code", d, instance_id="bug-1")
        _status(client, bug, RuntimeStatus.FAILED)
        with pytest.raises(RewindError, match="failed in its own code"):
            m.rewind(bug)
