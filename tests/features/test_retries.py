"""Retry policies on durable timers, and activity timeouts with late results dropped."""

from __future__ import annotations

import time
from pathlib import Path

from durafka import RuntimeStatus
from durafka.client import Client
from durafka.runtime.history import EventKind
from tests.features import apps
from tests.features.helpers import count, kinds, status_records


def test_activity_succeeds_on_the_third_attempt(client: Client, workdir: Path) -> None:
    flaky = apps.Flaky(str(workdir), "third-time-lucky", fail_times=2)
    iid = client.start_new(apps.retrying, apps.RetryInput(flaky, 5, 0.2))
    assert client.wait_for_completion(iid, timeout=60) == "succeeded on run 3"
    assert apps.runs(workdir, "third-time-lucky") == 3

    history = client.get_history(iid)
    steps = [
        k
        for k in kinds(history)
        if k in (EventKind.TASK_SCHEDULED, EventKind.TASK_FAILED, EventKind.TASK_COMPLETED)
        or k in (EventKind.TIMER_CREATED, EventKind.TIMER_FIRED)
    ]
    # Every attempt is in history, each retry waits on a durable timer.
    assert steps == [
        EventKind.TASK_SCHEDULED,
        EventKind.TASK_FAILED,
        EventKind.TIMER_CREATED,
        EventKind.TIMER_FIRED,
        EventKind.TASK_SCHEDULED,
        EventKind.TASK_FAILED,
        EventKind.TIMER_CREATED,
        EventKind.TIMER_FIRED,
        EventKind.TASK_SCHEDULED,
        EventKind.TASK_COMPLETED,
    ]
    timers = [e for e in history if e.kind is EventKind.TIMER_CREATED]
    assert all(t.fire_at is not None and t.fire_at - t.timestamp >= 200 for t in timers)


def test_retries_stop_after_max_attempts(client: Client, workdir: Path) -> None:
    flaky = apps.Flaky(str(workdir), "hopeless", fail_times=100)
    iid = client.start_new(apps.retrying, apps.RetryInput(flaky, 3, 0.05))
    assert (
        client.wait_for_completion(iid, timeout=60) == "gave up: run 3 of hopeless fails on purpose"
    )
    assert apps.runs(workdir, "hopeless") == 3
    assert count(client.get_history(iid), EventKind.TASK_SCHEDULED) == 3


def test_non_retryable_error_is_not_retried(client: Client, workdir: Path) -> None:
    iid = client.start_new(apps.not_retried, apps.Flaky(str(workdir), "permanent", 0))
    assert client.wait_for_completion(iid, timeout=60) == "PermanentError"
    assert apps.runs(workdir, "permanent") == 1
    history = client.get_history(iid)
    assert count(history, EventKind.TASK_SCHEDULED) == 1
    assert count(history, EventKind.TIMER_CREATED) == 0


def test_activity_timeout_is_catchable_and_the_late_result_is_dropped(
    running_app: object, client: Client, workdir: Path
) -> None:
    slow = apps.Slow(str(workdir), "slowpoke", seconds=1.5)
    iid = client.start_new(apps.times_out, apps.TimeoutInput(slow, 0.3, 2.5))
    began = time.monotonic()
    assert client.wait_for_completion(iid, timeout=60) == "timed out: ActivityTimeoutError"
    # The orchestration outlived the activity: its late result reached the processor.
    assert time.monotonic() - began >= 1.5
    assert apps.runs(workdir, "slowpoke") == 1

    history = client.get_history(iid)
    assert count(history, EventKind.TASK_SCHEDULED) == 1
    assert count(history, EventKind.TASK_COMPLETED) == 0  # dropped, never applied
    assert count(history, EventKind.EXECUTION_COMPLETED) == 1
    app = running_app
    statuses = status_records(app.transport, app.settings.task_hub, iid)  # type: ignore[attr-defined]
    terminal = [s for s in statuses if s is not None and s.runtime_status.is_terminal]
    assert [s.runtime_status for s in terminal] == [RuntimeStatus.COMPLETED]
