"""Repairing instances: rewind a failed one, reset one to an earlier event (issue 16)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import durafka
from durafka.cli import app as cli
from durafka.codec.records import encode_message
from durafka.errors import FailureDetails, RewindError
from durafka.management import Management
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import history_key
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from tests.features import repair_apps
from tests.features.helpers import count, read_topic, status_records, wait_processed
from tests.features.repair_apps import runs
from tests.support.waiting import wait_until


@pytest.fixture
def app_registry() -> Registry:
    return repair_apps.app.registry


def _status(client: durafka.Client, iid: str, status: RuntimeStatus) -> None:
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
        # The failure in the history, not the run count: a run is counted before it
        # looks for charge.broken, and the status may still be the one before the
        # rewind; mending charge any earlier lets this retry pass (CI: 2 runs, not 3).
        wait_until(
            lambda: count(client.get_history(iid), EventKind.TASK_FAILED) == 2,
            timeout=60,
            what="charge retried and failed again",
        )
        _status(client, iid, RuntimeStatus.FAILED)
        assert runs(tmp_path, "charge") == 2

        # Mended charge, broken child: a rewind of the rewind; the child fails the parent.
        (tmp_path / "charge.broken").unlink()
        (tmp_path / "child-step.broken").touch()
        m.rewind(iid, "charge is fixed")
        wait_until(
            lambda: (
                (s := client.get_status(iid)) is not None
                and s.failure_details is not None
                and "SubOrchestrationFailed" in s.failure_details.error_type
            ),
            timeout=60,
            what="the parent failed by its child",
        )
        assert runs(tmp_path, "child-step") == 1

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


def _cli(app: durafka.App, *args: str, code: int = 0) -> Any:
    s = app.settings
    common = ["--app", "tests.features.repair_apps:app", "--hub", s.task_hub]
    common += ["--bootstrap", s.bootstrap_servers, "--json"]
    result = CliRunner().invoke(cli, [*args, *common], env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else result


def test_reset_runs_an_instance_again_from_an_earlier_event(
    app_factory: Callable[..., durafka.App], tmp_path: Path
) -> None:
    app = app_factory()
    d = str(tmp_path)
    with app.running(), app.sync_client() as client, Management.for_app(app) as m:
        iid = client.start_new("two_events", d, instance_id="twice-1")
        wait_until(lambda: _custom(client, iid) == "waiting for go", timeout=60)
        waiting_for_go = datetime.now(UTC)
        time.sleep(0.05)  # records produced from now on are after that time
        client.raise_event(iid, "go")
        wait_until(lambda: _custom(client, iid) == "waiting for finish", timeout=60)
        old = client.get_status(iid)
        assert old is not None
        history = client.get_history(iid)
        raised = next(i for i, e in enumerate(history) if e.kind is EventKind.EVENT_RAISED)
        point = raised - 1  # the step that took the event
        assert history[point].kind is EventKind.ORCHESTRATOR_STARTED

        # Point in time: the instance as it was while it waited for "go".
        past = _cli(app, "history", iid, "--at", waiting_for_go.isoformat())
        assert past["instance"]["status"] == "RUNNING"
        assert past["instance"]["execution_id"] == old.execution_id
        assert past["instance"]["custom_status"] == "waiting for go"
        assert past["status_from"] == "changelog" and past["complete"]
        kinds = [e["kind"] for e in past["history"]]
        assert "EVENT_RAISED" not in kinds and kinds[-1] == "TASK_COMPLETED"
        assert past["pending"] == []
        text = CliRunner().invoke(
            cli,
            [
                "history",
                iid,
                "--at",
                waiting_for_go.isoformat(),
                "--hub",
                app.settings.task_hub,
                "--bootstrap",
                app.settings.bootstrap_servers,
            ],
            env={"COLUMNS": "300"},
        )
        assert "RUNNING (two_events)" in text.stdout and "waiting for go" in text.stdout

        with pytest.raises(RewindError, match="choose an index"):
            m.reset(iid, len(history) + 5)
        with pytest.raises(ValueError, match="to_event"):
            client.reset(iid, to_event=0)
        answer = _cli(app, "reset", iid, "--to-event", str(point), "--reason", "two was wrong")
        execution = answer["execution_id"]
        wait_until(
            lambda: (
                (s := client.get_status(iid)) is not None
                and s.execution_id == execution
                and s.serialized_custom_status == b'"waiting for finish"'
            ),
            timeout=60,
            what="the new execution past the re-applied event",
        )
        assert (runs(tmp_path, "one"), runs(tmp_path, "two")) == (1, 2)
        client.raise_event(iid, "finish", "ok")
        # Waits of this client follow its start's execution: name the new one.
        done = client.wait_for_status(iid, 60, execution_id=execution)
        assert done.runtime_status is RuntimeStatus.COMPLETED
        assert json.loads(done.serialized_output or b"") == ["one", "two", "ok"]

        # The old execution ended Terminated ("reset"); the new one's history is the
        # old one's up to the point, then the reset.
        records = [s for s in status_records(app.transport, app.settings.task_hub, iid) if s]
        ended = [s for s in records if s.execution_id == old.execution_id]
        assert ended[-1].runtime_status is RuntimeStatus.TERMINATED
        assert ended[-1].serialized_output == b'"reset"'
        new_history = client.get_history(iid)
        assert [e.kind for e in new_history[:point]] == [e.kind for e in history[:point]]
        assert new_history[point + 1].kind is EventKind.EXECUTION_RESET
        assert count(new_history, EventKind.EXECUTION_RESET) == 1
        # The chunk before the point was kept, not written again (a long prefix is
        # not rewritten as one record): its key was written once.
        changelog = read_topic(app.transport, HubTopics(app.settings.task_hub).changelog)
        assert [k for k, _ in changelog].count(history_key(iid, 0)) == 1
        assert [k for k, _ in changelog].count(history_key(iid, 1)) == 2  # the old, the new


def _custom(client: durafka.Client, iid: str) -> Any:
    s = client.get_status(iid)
    return (
        None
        if s is None or s.serialized_custom_status is None
        else json.loads(s.serialized_custom_status)
    )


def test_a_late_failure_of_the_failed_attempt_does_not_fail_the_retry(
    app_factory: Callable[..., durafka.App], tmp_path: Path
) -> None:
    app = app_factory()
    d = str(tmp_path)
    (tmp_path / "charge.broken").touch()
    with app.running(), app.sync_client() as client:
        iid = client.start_new("one_step", d, instance_id="late-1")
        _status(client, iid, RuntimeStatus.FAILED)
        failed = client.get_status(iid)
        assert failed is not None and failed.execution_id is not None
        # The retry is held; meanwhile the failed attempt's result arrives again
        # (a worker that ran it twice), with the token of before the rewind.
        (tmp_path / "charge.hold").touch()
        (tmp_path / "charge.broken").unlink()
        client.rewind(iid, "mended")
        wait_until(lambda: runs(tmp_path, "charge") == 2, timeout=60, what="the retry running")
        late = HistoryEvent(
            EventKind.TASK_FAILED,
            0,
            seq=0,
            attempt=1,
            failure=FailureDetails("builtins.RuntimeError", "charge is broken"),
            execution_id=f"{failed.execution_id}:0",
        )
        producer = app.transport.producer()
        key = iid.encode()
        partitions = app.transport.partition_count(HubTopics(app.settings.task_hub).orchestrations)
        producer.produce(
            HubTopics(app.settings.task_hub).orchestrations,
            partition_for(key, partitions),
            key,
            encode_message(iid, late),
        )
        producer.flush(30)
        producer.close()
        wait_processed(app.transport, app.settings.task_hub, timeout=60)
        (tmp_path / "charge.hold").unlink()
        assert client.wait_for_completion(iid, timeout=60) == "charge"


async def test_the_async_client_rewinds_and_resets(
    running_app: durafka.App, tmp_path: Path
) -> None:
    d = str(tmp_path)
    (tmp_path / "charge.broken").touch()
    async with running_app.client() as client:
        iid = await client.start_new("one_step", d, instance_id="async-1")
        failed = await client.wait_for_status(iid, timeout=60)
        assert failed.runtime_status is RuntimeStatus.FAILED
        (tmp_path / "charge.broken").unlink()
        await client.rewind(iid, "mended")
        # Waits after a rewind want a terminal status later than the failure.
        assert await client.wait_for_completion(iid, timeout=60) == "charge"
        execution = await client.reset(iid, to_event=2, reason="once more")
        done = await client.wait_for_status(iid, timeout=60)
        assert (done.execution_id, done.runtime_status) == (execution, RuntimeStatus.COMPLETED)
        assert runs(tmp_path, "charge") == 3
        with pytest.raises(RewindError, match="only a Failed instance"):
            await client.rewind(iid)


def test_reset_before_a_child_terminates_it_and_starts_it_again(
    app_factory: Callable[..., durafka.App], tmp_path: Path
) -> None:
    app = app_factory()
    with app.running(), app.sync_client() as client:
        iid = client.start_new("with_child", str(tmp_path), instance_id="parent-1")
        child = f"{iid}-child"
        wait_until(lambda: client.get_status(child) is not None, timeout=60, what="the child")
        old_child = client.get_status(child)
        assert old_child is not None
        history = client.get_history(iid)
        created = next(
            i for i, e in enumerate(history) if e.kind is EventKind.SUB_ORCHESTRATION_CREATED
        )
        # Right before the call: the replayed code makes it again, as a new call.
        client.reset(iid, to_event=created, reason="child input was wrong")
        wait_until(
            lambda: (
                (s := client.get_status(child)) is not None
                and s.execution_id != old_child.execution_id
                and s.runtime_status is RuntimeStatus.RUNNING
            ),
            timeout=60,
            what="the child started again",
        )
        records = status_records(app.transport, app.settings.task_hub, child)
        old = [s for s in records if s and s.execution_id == old_child.execution_id]
        assert old[-1].runtime_status is RuntimeStatus.TERMINATED
        assert runs(tmp_path, "first") == 1  # before the point: kept
        client.raise_event(child, "release", "go")
        assert client.wait_for_completion(iid, timeout=60) == ["first", "go"]
