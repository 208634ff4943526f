"""Management commands, run as a user runs them (here through typer's runner, in-process)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

import durafka
from durafka.cli import app as cli
from durafka.status import RuntimeStatus
from durafka.testing import replay
from tests.ops.apps import Order
from tests.support.waiting import wait_until

APP = "tests.ops.apps:app"


def run(app: durafka.App, *args: str, code: int = 0) -> Any:
    """Run ``durafka <args>`` against ``app``'s task hub; the parsed ``--json`` output."""
    s = app.settings
    common = ["--app", APP, "--hub", s.task_hub, "--bootstrap", s.bootstrap_servers]
    result = CliRunner().invoke(cli, [*args, *common, "--json"], env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else result


def status_of(app: durafka.App, iid: str) -> str:
    return str(run(app, "list", "--id-prefix", iid)["items"][0]["status"])


def test_commands_drive_an_instance(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        iid = client.start_new("approval", Order("pen", 1), instance_id="cli-1")
        done = client.start_new("hello", "Bo", instance_id="cli-2")
        client.wait_for_status(done)
    wait_until(lambda: status_of(running_app, iid) == "RUNNING", timeout=60)

    page = run(running_app, "list", "--status", "running")
    assert [i["instance_id"] for i in page["items"]] == [iid]
    assert page["continuation"] is None
    first = run(running_app, "list", "--page-size", "1", "--newest-first")
    assert first["items"][0]["instance_id"] == done and first["continuation"]

    assert run(running_app, "suspend", iid, "--reason", "wait")["accepted"]
    wait_until(lambda: status_of(running_app, iid) == "SUSPENDED", timeout=60)
    run(running_app, "resume", iid)
    wait_until(lambda: status_of(running_app, iid) == "RUNNING", timeout=60)
    run(running_app, "raise-event", iid, "approve", '{"ok": true}')
    wait_until(lambda: status_of(running_app, iid) == "COMPLETED", timeout=60)

    events = run(running_app, "history", iid)
    assert {"kind": "EVENT_RAISED", "name": "approve", "payload": '{"ok":true}'}.items() <= next(
        e for e in events if e["kind"] == "EVENT_RAISED"
    ).items()
    # What `history --json` writes is a history file that replay tests load as is.
    replayed = replay(running_app, json.dumps(events), instance_id=iid)
    assert replayed.is_complete and replayed.divergence is None
    restarted = run(running_app, "restart", iid)
    assert restarted["execution_id"]
    wait_until(lambda: status_of(running_app, iid) == "RUNNING", timeout=60)
    run(running_app, "terminate", iid, "--reason", "done")
    wait_until(lambda: status_of(running_app, iid) == "TERMINATED", timeout=60)
    run(running_app, "purge", iid)
    wait_until(lambda: not run(running_app, "list", "--id-prefix", iid)["items"], timeout=60)


def test_entities_partitions_and_topology_commands(running_app: durafka.App) -> None:
    run(running_app, "entities", "signal", "Counter", "c1", "add", "3")
    entity = wait_until(
        lambda: run(running_app, "entities", "list")["items"], timeout=60, what="the entity"
    )[0]
    assert entity["entity_id"] == "@Counter@c1" and entity["state"] == 3
    assert run(running_app, "entities", "get", "Counter", "c1")["state"] == 3
    run(running_app, "entities", "delete", "Counter", "c1")
    wait_until(lambda: not run(running_app, "entities", "list")["items"], timeout=60)

    info = run(running_app, "partitions", "--interval", "0")
    assert info["task_hub"] == running_app.settings.task_hub
    assert {p["topic"] for p in info["partitions"]} == {
        f"{running_app.settings.task_hub}.orchestrations",
        f"{running_app.settings.task_hub}.activities",
    }
    report = run(running_app, "topology", "describe", "--partitions", "4")
    assert report["in_sync"] and len(report["topics"]) == 6
    drift = run(running_app, "topology", "diff", "--partitions", "5", code=1)
    assert "partition count expected 5, actual 4" in drift.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["terminate", "bad\tid"], "control character"),
        (["raise-event", "x", "approve", "{not json"], "not JSON"),
        (["entities", "signal", "Co@unter", "k", "add", "1"], "invalid entity name"),
        (["list", "--from", "2026-01-01T00:00:00"], "no time zone"),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_runs(args: list[str], message: str) -> None:
    # No broker is named: these fail on their arguments before any connection.
    result = CliRunner().invoke(cli, [*args, "--bootstrap", "127.0.0.1:1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def test_refusals_are_one_line_errors(running_app: durafka.App) -> None:
    result = run(running_app, "terminate", "never-started", code=1)
    # The app's processor runs in this process and logs to the same stderr: its lines
    # (timestamped) are not the command's.
    own = [line for line in result.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(own) == 1 and own[0].startswith("error: no instance 'never-started'"), own
    result = run(running_app, "entities", "signal", "Counter", "k", "sub", code=1)
    assert "has no operation 'sub'" in result.stderr
    result = run(running_app, "list", "--status", "sleeping", code=1)
    assert "unknown runtime status" in result.stderr
    with running_app.sync_client() as client:
        assert client.list_instances(status=RuntimeStatus.RUNNING).items == []
