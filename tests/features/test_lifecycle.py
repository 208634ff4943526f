"""Lifecycle: suspend/resume, purge (one and by filter), custom status."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

import durafka
from durafka import RuntimeStatus
from durafka.client import Client
from durafka.errors import InstanceNotFinishedError, InstanceNotFoundError
from durafka.runtime.history import EventKind
from tests.features import apps
from tests.features.helpers import status_records, wait_processed
from tests.support.waiting import wait_until


def _status_is(client: Client, iid: str, status: RuntimeStatus) -> None:
    wait_until(
        lambda: (s := client.get_status(iid)) is not None and s.runtime_status is status,
        timeout=60,
        what=f"{iid} {status.value}",
    )


def _gone(client: Client, iid: str) -> bool:
    return client.get_status(iid) is None


# -- suspend / resume ----------------------------------------------------------------------


def test_events_raised_while_suspended_are_delivered_after_resume(
    running_app: durafka.App, client: Client
) -> None:
    iid = client.start_new(apps.gather_items, 3)
    _status_is(client, iid, RuntimeStatus.RUNNING)
    client.suspend(iid, "maintenance")
    _status_is(client, iid, RuntimeStatus.SUSPENDED)

    client.raise_event(iid, "item", "a")
    client.raise_event(iid, "go")
    client.raise_event(iid, "item", "b")
    client.raise_event(iid, "item", "c")
    # Processed but kept, not applied: no event in history, the instance stays suspended.
    wait_processed(running_app.transport, running_app.settings.task_hub)
    assert not [e for e in client.get_history(iid) if e.kind is EventKind.EVENT_RAISED]
    status = client.get_status(iid)
    assert status is not None and status.runtime_status is RuntimeStatus.SUSPENDED

    client.resume(iid, "done")
    assert client.wait_for_completion(iid, timeout=60) == ["a", "b", "c"]


def test_a_suspended_instance_can_be_terminated(client: Client) -> None:
    iid = client.start_new(apps.wait_for, "never")
    _status_is(client, iid, RuntimeStatus.RUNNING)
    client.suspend(iid)
    _status_is(client, iid, RuntimeStatus.SUSPENDED)
    client.terminate(iid, "given up")
    status = client.wait_for_status(iid, timeout=60)
    assert status.runtime_status is RuntimeStatus.TERMINATED and status.output == "given up"


# -- purge --------------------------------------------------------------------------------


def test_purge_removes_status_history_and_store_state(
    running_app: durafka.App, client: Client
) -> None:
    iid = client.start_new(apps.wait_for, "x")
    client.raise_event(iid, "x", "payload")
    assert client.wait_for_completion(iid, timeout=60) == "payload"
    assert client.get_history(iid)

    client.purge(iid)
    wait_until(lambda: client.get_status(iid) is None, timeout=60, what="the status tombstone")
    assert client.get_history(iid) == []
    # The status topic ends with a tombstone (compaction will drop the whole key).
    records = status_records(running_app.transport, running_app.settings.task_hub, iid)
    assert records[-1] is None
    assert client.list_instances(name="wait_for").items == []
    # A purged id is free again.
    again = client.start_new(apps.wait_for, "y", instance_id=iid)
    client.raise_event(again, "y", 2)
    assert client.wait_for_completion(again, timeout=60) == 2
    assert [e.kind for e in client.get_history(iid)].count(EventKind.EXECUTION_STARTED) == 1


def test_purge_refuses_running_and_unknown_instances(client: Client) -> None:
    iid = client.start_new(apps.wait_for, "never")
    _status_is(client, iid, RuntimeStatus.RUNNING)
    with pytest.raises(InstanceNotFinishedError, match="RUNNING"):
        client.purge(iid)
    with pytest.raises(InstanceNotFoundError, match="no-such"):
        client.purge("no-such")
    client.terminate(iid)
    client.wait_for_status(iid, timeout=60)
    client.purge(iid)  # terminated: allowed
    wait_until(lambda: client.get_status(iid) is None, timeout=60)


def test_purge_instances_by_status_and_creation_time(client: Client) -> None:
    old = [client.start_new(apps.sleeper, 0.0, instance_id=f"old-{i}") for i in range(3)]
    for iid in old:
        client.wait_for_completion(iid, timeout=60)
    failed = client.start_new(apps.square_child, -5, instance_id="old-failed")
    client.wait_for_status(failed, timeout=60)
    cutoff = datetime.now(UTC) + timedelta(milliseconds=1)
    wait_until(lambda: datetime.now(UTC) > cutoff, timeout=5)
    new = client.start_new(apps.sleeper, 0.0, instance_id="new-0")
    client.wait_for_completion(new, timeout=60)
    running = client.start_new(apps.wait_for, "never", instance_id="old-running")
    _status_is(client, running, RuntimeStatus.RUNNING)

    with pytest.raises(ValueError, match="RUNNING"):
        client.purge_instances(status=RuntimeStatus.RUNNING)
    assert client.purge_instances(status="COMPLETED", created_before=cutoff) == 3
    for iid in old:
        wait_until(partial(_gone, client, iid), timeout=60, what=f"{iid} purged")
    # The failed one, the new one and the running one are untouched.
    assert {s.instance_id for s in client.list_instances().items} == {failed, new, running}

    assert client.purge_instances(created_before=cutoff) == 1  # the failed one
    wait_until(lambda: client.get_status(failed) is None, timeout=60)
    assert client.get_history(failed) == []
    remaining = client.list_instances().items
    assert {s.instance_id for s in remaining} == {new, running}


async def test_async_client_purges_like_the_sync_client(running_app: durafka.App) -> None:
    async with running_app.client() as client:
        iid = await client.start_new(apps.sleeper, 0.0)
        await client.wait_for_completion(iid, timeout=60)
        assert await client.get_history(iid)
        assert await client.purge_instances(status=[RuntimeStatus.COMPLETED]) == 1
        deadline = time.monotonic() + 60
        while await client.get_status(iid) is not None:  # one processor round trip
            assert time.monotonic() < deadline, "the status tombstone did not arrive"
            await asyncio.sleep(0.01)
        assert await client.get_history(iid) == []
        with pytest.raises(InstanceNotFoundError):
            await client.purge(iid)


# -- custom status ----------------------------------------------------------------------------


def test_custom_status_is_visible_in_the_client(client: Client) -> None:
    iid = client.start_new(apps.progress, 2)
    wait_until(
        lambda: (
            (s := client.get_status(iid)) is not None and s.custom_status == {"step": 0, "of": 2}
        ),
        timeout=60,
    )
    client.raise_event(iid, "next")
    wait_until(
        lambda: (
            (s := client.get_status(iid)) is not None and s.custom_status == {"step": 1, "of": 2}
        ),
        timeout=60,
    )
    client.raise_event(iid, "next")
    assert client.wait_for_completion(iid, timeout=60) == "done"
    final = client.get_status(iid)
    assert final is not None and final.custom_status == {"step": 2, "of": 2, "done": True}
