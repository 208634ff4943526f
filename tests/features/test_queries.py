"""Queries: list_instances (filters, paging) and get_history (typed events)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import durafka
from durafka import RuntimeStatus
from durafka.client import AsyncClient, Client
from durafka.runtime.history import EventKind, HistoryEvent
from tests.features import apps
from tests.features.helpers import wait_until_async
from tests.support.waiting import wait_until


def test_list_instances_filters_by_status_name_and_creation_time_with_paging(
    client: Client,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    done = [client.start_new(apps.sleeper, 0.0, instance_id=f"list-done-{i}") for i in range(5)]
    for iid in done:
        client.wait_for_completion(iid, timeout=60)
    middle = datetime.now(UTC) + timedelta(milliseconds=1)
    wait_until(lambda: datetime.now(UTC) > middle, timeout=5)
    waiting = [
        client.start_new(apps.wait_for, "never", instance_id=f"list-wait-{i}") for i in range(3)
    ]
    wait_until(
        lambda: len(client.list_instances(status=RuntimeStatus.RUNNING).items) == 3, timeout=60
    )

    by_name = client.list_instances(name="sleeper")
    assert [s.instance_id for s in by_name.items] == done  # created in this order
    assert by_name.continuation is None
    running = client.list_instances(status=[RuntimeStatus.RUNNING, "SUSPENDED"])
    assert {s.instance_id for s in running.items} == set(waiting)
    assert all(s.name == "wait_for" for s in running.items)
    early = client.list_instances(created_from=before, created_to=middle)
    assert {s.instance_id for s in early.items} == set(done)
    late = client.list_instances(created_from=middle)
    assert {s.instance_id for s in late.items} == set(waiting)

    pages: list[list[str]] = []
    token: str | None = None
    while True:
        page = client.list_instances(page_size=3, continuation=token)
        pages.append([s.instance_id for s in page.items])
        token = page.continuation
        if token is None:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [i for p in pages for i in p] == [*done, *waiting]


def test_get_history_returns_typed_events_in_order(client: Client) -> None:
    iid = client.start_new(apps.parent_of_squares, 2)
    client.wait_for_completion(iid, timeout=60)
    history = client.get_history(iid)

    assert all(isinstance(e, HistoryEvent) for e in history)
    assert history[0].kind is EventKind.ORCHESTRATOR_STARTED
    assert history[1].kind is EventKind.EXECUTION_STARTED
    assert history[1].name == "parent_of_squares" and json.loads(history[1].payload or b"") == 2
    assert history[-1].kind is EventKind.EXECUTION_COMPLETED
    steps = [e.timestamp for e in history if e.kind is EventKind.ORCHESTRATOR_STARTED]
    assert steps == sorted(steps)
    created = {e.seq: e for e in history if e.kind is EventKind.SUB_ORCHESTRATION_CREATED}
    failed = [e for e in history if e.kind is EventKind.SUB_ORCHESTRATION_FAILED]
    assert len(created) == 3 and len(failed) == 1
    assert failed[0].failure is not None and "negative" in failed[0].failure.message
    assert created[failed[0].seq].instance_id == f"{iid}-bad"
    assert client.get_history("never-existed") == []


async def test_async_get_history_matches_the_sync_one(running_app: durafka.App) -> None:
    async with running_app.client() as aclient:
        iid = await aclient.start_new(apps.sleeper, 0.05)
        await aclient.wait_for_completion(iid, timeout=60)
        history = await aclient.get_history(iid)
    with running_app.sync_client() as client:
        assert client.get_history(iid) == history
    assert [e.kind for e in history if e.kind is not EventKind.ORCHESTRATOR_STARTED] == [
        EventKind.EXECUTION_STARTED,
        EventKind.TIMER_CREATED,
        EventKind.TIMER_FIRED,
        EventKind.EXECUTION_COMPLETED,
    ]


async def test_standalone_async_client_reads_history_and_purges(running_app: durafka.App) -> None:
    # Without the app's transport: aiokafka on Kafka, its own memory:// transport otherwise.
    async with AsyncClient(running_app.settings, running_app.registry) as client:
        ids = [await client.start_new(apps.sleeper, 0.0) for _ in range(3)]
        for iid in ids:
            await client.wait_for_completion(iid, timeout=60)
        history = await client.get_history(ids[0])
        assert [e.kind for e in history][-1] is EventKind.EXECUTION_COMPLETED

        assert await client.purge_instances(status="COMPLETED") == 3
        await wait_until_async(lambda: _none_left(client), what="the status tombstones")
        assert await client.get_history(ids[0]) == []


async def _none_left(client: AsyncClient) -> bool:
    return not (await client.list_instances()).items
