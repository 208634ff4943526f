"""Activities run next to the processor: results in the same batch, slow ones handed off.

The unit tests drive :class:`LocalActivities` directly; the app tests run
orchestrations whose activities outlast ``local_activity_wait_ms`` on both
transports and check that each activity ran exactly once (the worker adopted
the running execution instead of running it again) and the outputs are right.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

import durafka
from durafka import OrchestrationContext
from durafka.activities.local import LocalActivities
from durafka.codec.records import ActivityTask
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.status import RuntimeStatus

_runs: Counter[str] = Counter()
_runs_lock = threading.Lock()


def _count(key: str) -> None:
    with _runs_lock:
        _runs[key] += 1


def quick(x: int) -> int:
    """Returns at once."""
    _count(f"quick-{x}")
    return x * 2


def slow(x: int) -> int:
    """Outlasts the tests' 20 ms local wait."""
    _count(f"slow-{x}")
    time.sleep(0.3)
    return x + 100


def step(key: str) -> str:
    """One step of a chain: a little work, counted."""
    _count(key)
    time.sleep(0.004)
    return key


async def quick_async(x: int) -> int:
    """An async activity."""
    _count(f"async-{x}")
    return -x


_cancelled = threading.Event()


async def endless(x: int) -> int:
    """Runs until cancelled, and says so."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        _cancelled.set()
        raise
    return x


async def mixed(ctx: OrchestrationContext, x: int) -> list[int]:
    """A quick, a slow and an async activity at once."""
    return await ctx.when_all(
        [
            ctx.call_activity(quick, x),
            ctx.call_activity(slow, x),
            ctx.call_activity(quick_async, x),
        ]
    )


async def chain(ctx: OrchestrationContext, name: str) -> int:
    """Forty steps in a row: longer than one batch may wait for its local activities."""
    for i in range(40):
        await ctx.call_activity(step, f"{name}-{i}")
    return 40


def _registry() -> Registry:
    app = durafka.App()
    for fn in (quick, slow, step, quick_async, endless):
        app.activity(fn)
    app.orchestration(mixed)
    app.orchestration(chain)
    return app.registry


@pytest.fixture
def app_registry() -> Registry:
    """The functions above."""
    return _registry()


@pytest.fixture(autouse=True)
def _reset_counts() -> Iterator[None]:
    with _runs_lock:
        _runs.clear()
    yield


@pytest.fixture
def local() -> Iterator[LocalActivities]:
    pool = LocalActivities(
        _registry(), max_concurrent=4, max_payload_bytes=1 << 20, wait_seconds=0.02
    )
    yield pool
    pool.close()


def _task(name: str, x: object, seq: int = 0) -> ActivityTask:
    return ActivityTask(f"i-{name}-{x}", seq, 1, name, str(x).encode(), 0)


# -- the pool ------------------------------------------------------------------------------


def test_finished_runs_carry_their_results(local: LocalActivities) -> None:
    runs = [local.start(_task("quick", n, seq=n)) for n in range(20)]
    started = [r for r in runs if r is not None]
    assert len(started) == 20
    finished, unfinished = local.collect(started, 5.0)
    assert unfinished == []
    assert sorted(r.task.seq for r in finished) == list(range(20))
    for run in finished:
        assert run.result is not None and run.result.kind is EventKind.TASK_COMPLETED
        assert run.result.payload == str(run.task.seq * 2).encode()


def test_an_unregistered_activity_is_left_to_a_worker(local: LocalActivities) -> None:
    assert local.start(_task("not_here", 1)) is None


def test_a_slow_run_is_handed_off_and_adopted(local: LocalActivities) -> None:
    slow_run = local.start(_task("slow", 1))
    quick_run = local.start(_task("quick", 2, seq=1))
    assert slow_run is not None and quick_run is not None
    finished, unfinished = local.collect([slow_run, quick_run], 0.05)
    assert finished == [quick_run]
    assert unfinished == [slow_run]
    adopted = local.adopt(slow_run.task)
    assert adopted is not None
    future, ctx = adopted
    assert ctx is slow_run.ctx  # the worker sees the run's heartbeats
    assert future.result(timeout=5).payload == b"101"
    assert local.adopt(slow_run.task) is None  # adopted once only
    assert _runs["slow-1"] == 1


def test_hand_off_keeps_a_finished_result_for_the_worker(local: LocalActivities) -> None:
    run = local.start(_task("quick", 7))
    assert run is not None
    deadline = time.monotonic() + 5
    while run.result is None and time.monotonic() < deadline:
        time.sleep(0.001)
    local.hand_off([run])
    adopted = local.adopt(run.task)
    assert adopted is not None
    future = adopted[0]
    assert future.done()
    assert future.result().payload == b"14"
    # Handed off, it is not reported again as finished to the next round.
    assert local.collect([], 0.0) == ([], [])


def test_async_activities_run_on_the_pool_loop(local: LocalActivities) -> None:
    run = local.start(_task("quick_async", 5))
    assert run is not None
    finished, _ = local.collect([run], 5.0)
    assert finished == [run] and run.result is not None and run.result.payload == b"-5"


def test_close_cancels_the_async_activities_still_running() -> None:
    local = LocalActivities(
        _registry(), max_concurrent=1, max_payload_bytes=1 << 20, wait_seconds=0.02
    )
    _cancelled.clear()
    run = local.start(_task("endless", 1))
    assert run is not None
    assert local.collect([run], 0.05) == ([], [run])  # running, handed off
    local.close()
    # The loop's thread cancels what is left on it before it closes the loop.
    assert _cancelled.wait(5)
    adopted = local.adopt(run.task)
    assert adopted is not None and not adopted[0].done()  # a cancelled run reports nothing


# -- in an app, on both transports ----------------------------------------------------------------


@pytest.fixture
def local_app(app_factory: Callable[..., durafka.App]) -> Iterator[durafka.App]:
    app = app_factory(local_activity_wait_ms=20)
    with app.running():
        yield app


def test_slow_activities_are_handed_off_and_run_once(local_app: durafka.App) -> None:
    client = local_app.sync_client()
    ids = [client.start_new(mixed, n) for n in range(10)]
    for n, iid in enumerate(ids):
        status = client.wait_for_status(iid, timeout=60)
        assert status.runtime_status is RuntimeStatus.COMPLETED, status.failure_details
        assert status.output == [n * 2, n + 100, -n]
    for n in range(10):
        assert (_runs[f"quick-{n}"], _runs[f"slow-{n}"], _runs[f"async-{n}"]) == (1, 1, 1)


def test_a_chain_longer_than_the_wait_completes_each_step_once(local_app: durafka.App) -> None:
    client = local_app.sync_client()
    ids = [client.start_new(chain, f"c{k}") for k in range(3)]
    for iid in ids:
        status = client.wait_for_status(iid, timeout=60)
        assert status.runtime_status is RuntimeStatus.COMPLETED, status.failure_details
        assert status.output == 40
    assert sorted(_runs.values()) == [1] * 120  # 3 chains x 40 steps, none run twice
