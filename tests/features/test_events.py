"""External events: waiting, buffering in order, clear errors, the timeout pattern."""

from __future__ import annotations

import pytest

import durafka
from durafka import RuntimeStatus
from durafka.client import Client
from durafka.errors import InstanceNotFoundError, InstanceNotRunningError
from durafka.processor.orchestrations import PURGE_SEQ
from durafka.runtime.history import EventKind
from durafka.state.keys import parse_timer_key
from durafka.topology import HubTopics
from tests.features import apps
from tests.features.helpers import count, read_topic
from tests.support.waiting import wait_until


def _running(client: Client, iid: str) -> None:
    wait_until(
        lambda: (
            (s := client.get_status(iid)) is not None and s.runtime_status is RuntimeStatus.RUNNING
        ),
        timeout=60,
        what=f"{iid} running",
    )


def test_waiting_instance_receives_the_event(client: Client) -> None:
    iid = client.start_new(apps.wait_for, "approval")
    _running(client, iid)
    client.raise_event(iid, "approval", {"by": "ada", "ok": True})
    assert client.wait_for_completion(iid, timeout=60) == {"by": "ada", "ok": True}
    raised = [e for e in client.get_history(iid) if e.kind is EventKind.EVENT_RAISED]
    assert [e.name for e in raised] == ["approval"]


def test_events_raised_before_the_wait_are_buffered_in_order(client: Client) -> None:
    iid = client.start_new(apps.gather_items, 5)
    _running(client, iid)
    for i in range(5):
        client.raise_event(iid, "item", i)
    client.raise_event(iid, "other", "ignored")  # another name does not disturb the order
    client.raise_event(iid, "go")
    assert client.wait_for_completion(iid, timeout=60) == [0, 1, 2, 3, 4]


def test_events_raised_right_after_start_are_not_lost(client: Client) -> None:
    # The status view has not seen the instance yet: the client remembers it started it.
    iid = client.start_new(apps.gather_items, 2)
    client.raise_event(iid, "item", "a")
    client.raise_event(iid, "go")
    client.raise_event(iid, "item", "b")
    assert client.wait_for_completion(iid, timeout=60) == ["a", "b"]


def test_raising_to_an_unknown_instance_is_a_clear_error(client: Client) -> None:
    with pytest.raises(InstanceNotFoundError, match="no-such-instance"):
        client.raise_event("no-such-instance", "go")


def test_raising_to_a_finished_instance_is_a_clear_error(client: Client) -> None:
    iid = client.start_new(apps.wait_for, "x")
    client.raise_event(iid, "x", 1)
    assert client.wait_for_completion(iid, timeout=60) == 1
    with pytest.raises(InstanceNotRunningError, match="COMPLETED"):
        client.raise_event(iid, "x", 2)


async def test_async_client_raises_events_and_checks_the_target(running_app: durafka.App) -> None:
    async with running_app.client() as client:
        iid = await client.start_new(apps.gather_items, 1)
        await client.raise_event(iid, "item", "async")
        await client.raise_event(iid, "go")
        assert await client.wait_for_completion(iid, timeout=60) == ["async"]
        with pytest.raises(InstanceNotRunningError):
            await client.raise_event(iid, "go")
        with pytest.raises(InstanceNotFoundError):
            await client.raise_event("never-started", "go")


def test_timeout_pattern_event_wins_and_the_timer_is_cancelled(client: Client) -> None:
    iid = client.start_new(apps.approve_or_time_out, 0.8)
    _running(client, iid)
    client.raise_event(iid, "approve", "ada")
    assert client.wait_for_completion(iid, timeout=60) == "approved by ada"
    history = client.get_history(iid)
    # Two timers were created (the race's and the sleep after it); only the sleep's
    # firing reached the orchestration: the cancelled one was dropped when it fired.
    assert count(history, EventKind.TIMER_CREATED) == 2
    fired = [e.seq for e in history if e.kind is EventKind.TIMER_FIRED]
    sleep_seq = max(e.seq for e in history if e.kind is EventKind.TIMER_CREATED)
    assert fired == [sleep_seq]


def test_timeout_pattern_timer_wins_without_an_event(client: Client) -> None:
    iid = client.start_new(apps.approve_or_time_out, 0.5)
    assert client.wait_for_completion(iid, timeout=60) == "timed out"
    history = client.get_history(iid)
    assert count(history, EventKind.TIMER_FIRED) == 1
    assert count(history, EventKind.EVENT_RAISED) == 0


def _pending_timers(app: durafka.App, iid: str) -> list[tuple[int, str, int]]:
    """Timers of ``iid`` whose last record on the changelog is a put, not a tombstone."""
    last: dict[bytes, bytes | None] = {}
    for key, value in read_topic(app.transport, HubTopics(app.settings.task_hub).changelog):
        if key is not None and key.startswith(b"t/"):
            last[key] = value
    timers = [parse_timer_key(k) for k, v in last.items() if v is not None]
    return [t for t in timers if t[1] == iid]


def test_a_finished_instance_leaves_no_pending_timer(
    running_app: durafka.App, client: Client
) -> None:
    approved = client.start_new(apps.approve_within_a_day)
    terminated = client.start_new(apps.approve_within_a_day)
    for iid in (approved, terminated):
        _running(client, iid)
    assert _pending_timers(running_app, approved), "the day-long timer was never stored"
    client.raise_event(approved, "approve", "ada")
    assert client.wait_for_completion(approved, timeout=60) == "approved by ada"
    client.terminate(terminated, "no longer needed")
    wait_until(
        lambda: (s := client.get_status(terminated)) is not None and s.is_terminal,
        timeout=60,
        what=f"{terminated} terminated",
    )
    # Deleted with the ending: not kept for a day only to be dropped when it fires. What
    # is left is the timer that purges the finished instance (finished_retention_ms).
    for iid in (approved, terminated):
        assert [seq for _, _, seq in _pending_timers(running_app, iid)] == [PURGE_SEQ]
