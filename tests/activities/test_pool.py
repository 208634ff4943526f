"""Activity threads: calls run, threads grow to the limit, errors do not kill the pool;
the event-loop thread cancels what is left on it and closes its loop when stopped."""

from __future__ import annotations

import asyncio
import threading
import time
from queue import SimpleQueue

import pytest

from durafka.activities.pool import CallbackThreadPool, EventLoopThread


def test_every_call_runs_with_its_arguments() -> None:
    pool = CallbackThreadPool(4, "t")
    out: SimpleQueue[int] = SimpleQueue()
    for n in range(200):
        pool.submit(out.put, n)
    got = sorted(out.get(timeout=5) for _ in range(200))
    pool.shutdown()
    assert got == list(range(200))


def test_threads_grow_to_the_limit_and_no_further() -> None:
    pool = CallbackThreadPool(3, "t")
    release = threading.Event()
    names: SimpleQueue[int] = SimpleQueue()

    def block() -> None:
        names.put(threading.get_ident())
        release.wait(5)

    for _ in range(6):
        pool.submit(block)
    first = {names.get(timeout=5) for _ in range(3)}
    time.sleep(0.1)
    assert names.empty()  # three threads, all blocked: the other calls wait
    release.set()
    rest = [names.get(timeout=5) for _ in range(3)]
    pool.shutdown()
    assert len(first | set(rest)) == 3 and len(pool._threads) == 3


def test_calls_queued_behind_a_hung_one_get_threads_of_their_own() -> None:
    """An idle thread is taken by one call only: the calls submitted right after a
    call that hangs must not wait behind it (they did: the idle thread counted as
    free for every call submitted before it woke up)."""
    pool = CallbackThreadPool(8, "t")
    done: SimpleQueue[int] = SimpleQueue()
    pool.submit(done.put, 0)
    assert done.get(timeout=5) == 0  # one thread, idle now
    release = threading.Event()
    try:
        pool.submit(release.wait, 30)  # hangs
        for n in (1, 2, 3):
            pool.submit(done.put, n)
        assert sorted(done.get(timeout=5) for _ in range(3)) == [1, 2, 3]
    finally:
        release.set()
        pool.shutdown()


def test_idle_threads_are_reused_before_new_ones_start() -> None:
    pool = CallbackThreadPool(8, "t")
    done: SimpleQueue[int] = SimpleQueue()
    for n in range(50):
        pool.submit(done.put, n)
        assert done.get(timeout=5) == n
    pool.shutdown()
    assert len(pool._threads) == 1


def test_a_call_that_raises_is_logged_and_the_pool_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = CallbackThreadPool(1, "t")
    out: SimpleQueue[str] = SimpleQueue()

    def boom() -> None:
        raise SystemExit("user code exited")

    pool.submit(boom)
    pool.submit(out.put, "after")
    assert out.get(timeout=5) == "after"
    pool.shutdown()
    assert "a call on the t pool raised" in caplog.text


def test_shutdown_drops_what_has_not_started_and_refuses_more() -> None:
    pool = CallbackThreadPool(1, "t")
    release = threading.Event()
    ran: list[int] = []
    pool.submit(release.wait, 5)
    for n in range(5):
        pool.submit(ran.append, n)
    pool.shutdown()
    release.set()
    time.sleep(0.1)
    assert ran == []
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(ran.append, 9)


def test_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CallbackThreadPool(0, "t")


def test_the_loop_thread_starts_on_first_use_and_runs_coroutines() -> None:
    loop_thread = EventLoopThread("t-loop")
    loop_thread.stop(join_timeout=1.0)  # never started: nothing to stop

    async def double(x: int) -> int:
        return 2 * x

    loop = loop_thread.loop()
    assert loop_thread.loop() is loop
    assert asyncio.run_coroutine_threadsafe(double(21), loop).result(timeout=5) == 42
    loop_thread.stop(join_timeout=5.0)
    assert loop.is_closed()


def test_stopping_the_loop_thread_cancels_leftover_tasks_and_closes_the_loop() -> None:
    loop_thread = EventLoopThread("t-loop")
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    future = asyncio.run_coroutine_threadsafe(forever(), loop_thread.loop())
    assert started.wait(5)
    loop_thread.stop(join_timeout=5.0)
    assert future.cancelled()
    assert loop_thread.loop().is_closed()
    loop_thread.stop()  # again: harmless
