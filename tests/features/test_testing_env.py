"""Testing orchestrations with ``durafka.testing.TestEnvironment``: examples for users.

``TestEnvironment(app)`` runs the app's orchestrations and activities in process
on a private ``memory://`` broker, with a clock that jumps to the next durable
timer whenever nothing else is going on. A 30-day timer completes at once, and
the orchestration still sees 30 days pass (``ctx.now()``). Use it with
pytest-asyncio (``asyncio_mode = "auto"``), one environment per test::

    from durafka.testing import TestEnvironment

    async def test_reminder_after_30_days():
        async with TestEnvironment(app) as env:
            iid = await env.client.start_new(send_reminder, "ada")
            assert await env.wait_for_completion(iid) == "reminded ada"

With ``auto_skip=False`` the clock only moves when the test says so
(``env.clock.advance(timedelta(...))``), to look at an instance in the middle
of a wait. Time only skips while the system is idle: activities run in real
time, as they do in production.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from durafka import RuntimeStatus
from durafka.runtime.history import EventKind
from durafka.testing import TestEnvironment
from tests.features import apps
from tests.features.helpers import wait_until_async

DAY = 24 * 3600.0


async def test_a_30_day_timer_completes_at_once() -> None:
    async with TestEnvironment(apps.app) as env:
        iid = await env.client.start_new(apps.sleeper, 30 * DAY)
        elapsed = await env.wait_for_completion(iid)
    # The orchestration's own clock (ctx.now()) moved by 30 days.
    assert 30 * DAY <= elapsed < 30 * DAY + 60


async def test_retries_wait_an_hour_on_durable_timers(workdir: Path) -> None:
    flaky = apps.Flaky(str(workdir), "hourly", fail_times=2)
    async with TestEnvironment(apps.app) as env:
        iid = await env.client.start_new(apps.retrying, apps.RetryInput(flaky, 5, 3600.0))
        assert await env.wait_for_completion(iid) == "succeeded on run 3"
        history = await env.client.get_history(iid)
    waits = [(e.fire_at or 0) - e.timestamp for e in history if e.kind is EventKind.TIMER_CREATED]
    assert waits == [3_600_000, 3_600_000]  # an hour each, on the skipping clock


async def test_an_event_against_a_one_week_timeout() -> None:
    async with TestEnvironment(apps.app) as env:
        late = await env.client.start_new(apps.approve_or_time_out, 7 * DAY)
        assert await env.wait_for_completion(late) == "timed out"


async def test_move_the_clock_by_hand() -> None:
    async with TestEnvironment(apps.app, auto_skip=False) as env:
        iid = await env.client.start_new(apps.sleeper, 1 * DAY)
        await wait_until_async(lambda: _has_timer(env, iid), what="the timer")
        # The status view reads H.status on a thread of its own: it may lag the history.
        await wait_until_async(lambda: _has_status(env, iid), what="its status")

        env.clock.advance(timedelta(hours=23))
        status = await env.client.get_status(iid)
        assert status is not None and status.runtime_status is RuntimeStatus.RUNNING

        env.clock.advance(timedelta(hours=1))
        status = await env.wait_for_status(iid)
        assert status.runtime_status is RuntimeStatus.COMPLETED
        assert status.output >= DAY


async def _has_status(env: TestEnvironment, iid: str) -> bool:
    return await env.client.get_status(iid) is not None


async def _has_timer(env: TestEnvironment, iid: str) -> bool:
    history = await env.client.get_history(iid)
    return any(e.kind is EventKind.TIMER_CREATED for e in history)


async def test_retries_stop_at_the_total_timeout(workdir: Path) -> None:
    flaky = apps.Flaky(str(workdir), "deadline", fail_times=100)
    # Waits of 4 minutes within 10 minutes: attempts at 0, 4 and 8 minutes, then no more.
    retry = apps.RetryInput(flaky, 10, 240.0, total_timeout_seconds=600.0)
    async with TestEnvironment(apps.app) as env:
        iid = await env.client.start_new(apps.retrying, retry)
        assert await env.wait_for_completion(iid) == "gave up: run 3 of deadline fails on purpose"
    assert apps.runs(workdir, "deadline") == 3
