"""``durafka replay-check``: a compatible and an incompatible change against live instances."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import durafka
from durafka.cli import app as cli
from durafka.management import Management
from durafka.registry import Registry
from durafka.state.keys import instance_key
from durafka.topology import HubTopics
from tests.ops import deploys
from tests.support.waiting import wait_until


@pytest.fixture
def app_registry() -> Registry:
    return deploys.running.registry


def check(app: durafka.App, new_code: str, *extra: str, code: int) -> Any:
    """``durafka replay-check tests.ops.deploys:<new_code> --json`` on ``app``'s task hub."""
    s = app.settings
    args = ["replay-check", f"tests.ops.deploys:{new_code}", "--hub", s.task_hub]
    args += ["--bootstrap", s.bootstrap_servers, "--json", *extra]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_replay_check_tells_a_compatible_from_an_incompatible_change(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    with app.running(), app.sync_client() as client:
        waiting = [client.start_new("saga", f"o{i}", instance_id=f"order-{i}") for i in range(5)]
        done = client.start_new("saga", "o9", instance_id="order-done")
        for iid in [*waiting, done]:
            wait_until(
                lambda iid=iid: (
                    (s := client.get_status(iid)) is not None
                    and s.serialized_custom_status == b'"waiting"'
                ),
                timeout=60,
                what=f"{iid} waiting for approval",
            )
        client.raise_event(done, "approve")
        client.wait_for_completion(done, timeout=60)

        ok = check(app, "compatible", code=0)
        assert (ok["checked"], ok["would_fail"], ok["groups"]) == (5, 0, [])

        bad = check(app, "incompatible", code=1)
        assert (bad["checked"], bad["would_fail"]) == (5, 5)
        [group] = bad["groups"]
        assert group["orchestration"] == "saga" and group["count"] == 5
        assert group["error_type"] == "NonDeterminismError"
        line = next(
            n
            for n, text in enumerate(Path(deploys.__file__).read_text().splitlines(), 1)
            if "INCOMPATIBLE-LINE" in text
        )
        assert group["location"] == f"{deploys.__file__}:{line} in saga_reordered"
        assert sorted(f["instance_id"] for f in group["instances"]) == sorted(waiting)
        first = group["instances"][0]
        assert (first["seq"], first["recorded"], first["new"]) == (
            0,
            "call_activity('reserve')",
            "call_activity('charge')",
        )
        assert first["status"] == "RUNNING"

        # The finished instance is checked too when asked for; the window leaves it out
        # when it finished before.
        window = check(app, "incompatible", "--finished-within", "1h", code=1)
        assert (window["checked"], window["would_fail"]) == (6, 6)

        # The same report through Management, and the text for people.
        with Management(app.settings, deploys.compatible.registry, app.transport) as m:
            assert m.replay_check().would_fail == 0
        s = app.settings
        text = CliRunner().invoke(
            cli,
            [
                "replay-check",
                "tests.ops.deploys:incompatible",
                "--hub",
                s.task_hub,
                "--bootstrap",
                s.bootstrap_servers,
            ],
            env={"COLUMNS": "300"},
        )
        assert text.exit_code == 1
        assert "5 would fail" in text.stdout
        expected = (
            "order-0 (RUNNING): #0 recorded call_activity('reserve'), now call_activity('charge')"
        )
        assert expected in text.stdout


def test_a_record_that_does_not_decode_is_reported_not_a_crash(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    producer = app.transport.producer()
    producer.produce(topics.changelog, 0, instance_key("garbled"), b"not avro")
    producer.flush(30)
    producer.close()
    with Management(app.settings, deploys.running.registry, app.transport) as m:
        report = m.replay_check(partitions=[0])
    assert (report.checked, report.would_fail) == (1, 1)
    [group] = report.groups
    assert group.error_type == "DecodeError"
    assert group.instances[0].instance_id == "garbled"
    assert "do not decode" in group.instances[0].message
