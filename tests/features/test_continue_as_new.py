"""continue_as_new: eternal orchestrations keep bounded state."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from durafka import RuntimeStatus
from durafka.client import Client
from durafka.runtime.history import EventKind
from durafka.testing import TestEnvironment
from tests.features import apps


def test_eternal_counter_keeps_bounded_state(client: Client, bootstrap: str) -> None:
    # 10,000 generations in process; fewer on the broker. Either way more than one
    # batch runs back to back (MAX_GENERATIONS_PER_BATCH), so the deferral is used.
    generations = 10_000 if bootstrap.startswith("memory://") else 250
    iid = client.start_new(apps.counter, apps.Counter(0, generations))
    assert client.wait_for_completion(iid, timeout=120) == generations
    history = client.get_history(iid)
    assert [e.kind for e in history if e.kind is not EventKind.ORCHESTRATOR_STARTED] == [
        EventKind.EXECUTION_STARTED,
        EventKind.EXECUTION_COMPLETED,
    ]
    status = client.get_status(iid)
    assert status is not None
    assert status.input == {"n": generations, "until": generations, "with_activity": False}


def test_counter_with_an_activity_per_generation_keeps_history_bounded(client: Client) -> None:
    iid = client.start_new(apps.counter, apps.Counter(0, 60, with_activity=True))
    assert client.wait_for_completion(iid, timeout=120) == 60
    history = client.get_history(iid)
    assert [e.kind for e in history if e.kind is not EventKind.ORCHESTRATOR_STARTED] == [
        EventKind.EXECUTION_STARTED,
        EventKind.TASK_SCHEDULED,
        EventKind.TASK_COMPLETED,
        EventKind.EXECUTION_COMPLETED,
    ]


async def test_cancelled_timers_of_earlier_generations_do_not_fire_into_later_ones() -> None:
    async with TestEnvironment(apps.app, auto_skip=False) as env:
        client = env.client
        # Generation 0 waits 10 minutes for a tick, generation 1 waits 60.
        iid = await client.start_new(apps.ticking, {"generation": 0, "timeouts_minutes": [10, 60]})
        await _wait_for_generation(env, iid, 0)
        await client.raise_event(iid, "tick")
        await _wait_for_generation(env, iid, 1)

        # Past generation 0's cancelled timer, well before generation 1's.
        env.clock.advance(timedelta(minutes=20))
        await _settle(env)
        status = await client.get_status(iid)
        assert status is not None and status.runtime_status is RuntimeStatus.RUNNING, status

        await client.raise_event(iid, "tick")
        assert await env.wait_for_completion(iid) == {"ticked": 2}


async def _wait_for_generation(env: TestEnvironment, iid: str, generation: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        history = await env.client.get_history(iid)
        started = [e for e in history if e.kind is EventKind.EXECUTION_STARTED]
        waiting = any(e.kind is EventKind.TIMER_CREATED for e in history)
        status = await env.client.get_status(iid)
        if started and waiting and status is not None and status.input["generation"] == generation:
            return
        assert time.monotonic() < deadline, f"generation {generation} not reached: {status}"
        await asyncio.sleep(0.01)


async def _settle(env: TestEnvironment) -> None:
    """Wait until every due timer was collected and its effects were processed."""
    processor = env._processor  # the engine under test: its timer index is what matters
    assert processor is not None
    deadline = time.monotonic() + 30
    while True:
        due = processor.next_timer_ms()
        if (due is None or due > env.clock() * 1000) and env.is_idle():
            return
        assert time.monotonic() < deadline, "the processor did not settle"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("keep", [True, False])
def test_unprocessed_events_carry_over_only_when_asked(client: Client, keep: bool) -> None:
    iid = client.start_new(apps.carry_over, {"generation": 0, "keep": keep})
    client.raise_event(iid, "item", "first")
    client.raise_event(iid, "item", "second")
    client.raise_event(iid, "go")
    expected = ["first", "second"] if keep else []
    assert client.wait_for_completion(iid, timeout=60) == expected
