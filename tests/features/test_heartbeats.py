"""Activity heartbeats: a hung activity fails (and is retried); a beating one runs on.

The worker sends a heartbeat when the activity starts and then at most every
half timeout; the processor keeps one timer per running activity and fails the
attempt with ``ActivityTimeoutError`` when heartbeats stop (see
durafka/processor/heartbeats.py).
"""

from __future__ import annotations

from pathlib import Path

from durafka.client import Client
from durafka.runtime.history import EventKind
from tests.features import apps
from tests.features.helpers import count


def test_heartbeats_keep_a_long_activity_alive(client: Client, workdir: Path) -> None:
    # Runs 2.5 times its heartbeat timeout.
    beating = apps.Beating(str(workdir), "long", seconds=2.5)
    iid = client.start_new(apps.calls_with_heartbeats, apps.HeartbeatCall(beating, 1.0))
    assert client.wait_for_completion(iid, timeout=60) == "run 1 beat"
    assert apps.runs(workdir, "long") == 1


def test_a_hung_activity_fails_with_no_heartbeat_within_the_timeout(
    client: Client, workdir: Path
) -> None:
    hung = apps.Beating(str(workdir), "hung", seconds=0.1, hang_runs=1, hang_seconds=60)
    iid = client.start_new(apps.calls_with_heartbeats, apps.HeartbeatCall(hung, 1.0))
    # Long before the activity comes back (60 s): "hung run 1 came back" otherwise.
    assert client.wait_for_completion(iid, timeout=45) == (
        "ActivityTimeoutError: activity 'beating' sent no heartbeat within 0:00:01"
    )
    history = client.get_history(iid)
    assert count(history, EventKind.TASK_HEARTBEAT) == 0  # heartbeats never enter a history
    [failed] = [e for e in history if e.kind is EventKind.TASK_FAILED]
    assert failed.failure is not None
    assert failed.failure.error_type == "durafka.errors.ActivityTimeoutError"


def test_a_hung_activity_is_retried_under_its_retry_policy(client: Client, workdir: Path) -> None:
    hung_once = apps.Beating(str(workdir), "once", seconds=0.3, hang_runs=1, hang_seconds=60)
    call = apps.HeartbeatCall(hung_once, 1.0, max_attempts=3)
    iid = client.start_new(apps.calls_with_heartbeats, call)
    assert client.wait_for_completion(iid, timeout=45) == "run 2 beat"
    history = client.get_history(iid)
    assert count(history, EventKind.TASK_SCHEDULED) == 2
    assert count(history, EventKind.TASK_FAILED) == 1
