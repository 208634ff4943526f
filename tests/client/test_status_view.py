"""The status view: materialised from H.status, tombstones, readiness, waiters."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from durafka.client.status_view import StatusView
from durafka.codec.records import encode_status
from durafka.errors import TransportError, WaitTimeoutError
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.transport.aiokafka import AioKafkaFeeder
from durafka.transport.feeder import ThreadFeeder
from tests.client.conftest import PARTITIONS, Hub, status
from tests.support.waiting import wait_until


def _terminal(s: OrchestrationStatus) -> bool:
    return s.is_terminal


@pytest.fixture
def view(env: Hub) -> Iterator[StatusView]:
    """A view fed by a thread feeder, ready before the test starts."""
    v = StatusView()
    feeder = ThreadFeeder(v, env.transport, env.topics.status)
    feeder.start()
    v.wait_ready(30)
    yield v
    feeder.stop()


def test_view_materialises_latest_status_and_tombstones_remove(env: Hub, view: StatusView) -> None:
    env.publish(
        status("a", RuntimeStatus.RUNNING),
        status("b", RuntimeStatus.RUNNING),
        status("c", RuntimeStatus.PENDING),
        status("a", RuntimeStatus.COMPLETED, output=b"42"),
        "b",  # purged
        status("d", RuntimeStatus.FAILED),
    )
    # Ids land on different partitions, read in no particular order between them.
    wait_until(lambda: sorted(s.instance_id for s in view.all()) == ["a", "c", "d"], timeout=10)
    assert view.get("b") is None
    a = view.get("a")
    assert a is not None and a.runtime_status is RuntimeStatus.COMPLETED and a.output == 42
    assert sorted(s.instance_id for s in view.all()) == ["a", "c", "d"]
    assert len(view) == 3


def test_view_loads_records_written_before_it_started(env: Hub) -> None:
    # Written in a transaction, as the processor does: the commit markers take
    # offsets, so readiness must compare positions, not last record offsets.
    env.publish(
        *[status(f"old-{i}", RuntimeStatus.COMPLETED) for i in range(20)], transactional=True
    )
    env.publish(status("old-3", RuntimeStatus.FAILED), transactional=True)
    v = StatusView()
    feeder = ThreadFeeder(v, env.transport, env.topics.status)
    feeder.start()
    try:
        v.wait_ready(30)
        assert v.ready
        assert len(v) == 20  # ready means everything published before start is in
        old3 = v.get("old-3")
        assert old3 is not None and old3.runtime_status is RuntimeStatus.FAILED
    finally:
        feeder.stop()


def test_empty_topic_is_ready_at_once(env: Hub, view: StatusView) -> None:
    assert view.ready
    assert view.all() == []


def test_wait_for_wakes_on_a_later_record(env: Hub, view: StatusView) -> None:
    env.publish(status("w", RuntimeStatus.RUNNING))
    view.wait_for("w", lambda s: True, 10)
    published_at: list[float] = []

    def finish() -> None:
        time.sleep(0.2)
        env.publish(status("w", RuntimeStatus.COMPLETED, output=b'"done"'))
        published_at.append(time.monotonic())  # acknowledged by the broker

    writer = threading.Thread(target=finish)
    writer.start()
    result = view.wait_for("w", _terminal, 10)
    woke_at = time.monotonic()
    writer.join()
    assert result.runtime_status is RuntimeStatus.COMPLETED and result.output == "done"
    # The feeder must not sit on a new status for a poll timeout.
    assert woke_at - published_at[0] < 0.08


def test_wait_for_times_out_naming_the_id_and_last_status(env: Hub, view: StatusView) -> None:
    env.publish(status("slow", RuntimeStatus.RUNNING))
    view.wait_for("slow", lambda s: True, 10)
    start = time.monotonic()
    with pytest.raises(WaitTimeoutError, match=r"'slow'.*last status seen: RUNNING"):
        view.wait_for("slow", _terminal, 0.3, what="a terminal status")
    assert 0.25 < time.monotonic() - start < 2
    with pytest.raises(WaitTimeoutError, match=r"'nobody'.*no status was seen"):
        view.wait_for("nobody", _terminal, 0.05)


async def test_async_waiter_wakes_on_a_later_record(env: Hub, view: StatusView) -> None:
    waiter = asyncio.create_task(view.wait_for_async("aw", _terminal, 10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await asyncio.to_thread(env.publish, status("aw", RuntimeStatus.RUNNING))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # Running does not satisfy the predicate
    await asyncio.to_thread(env.publish, status("aw", RuntimeStatus.TERMINATED, output=b'"stop"'))
    result = await asyncio.wait_for(waiter, 10)
    assert result.runtime_status is RuntimeStatus.TERMINATED
    assert view._waiters == {}  # resolved waiters are dropped


async def test_async_wait_times_out_and_leaves_no_waiter(env: Hub, view: StatusView) -> None:
    with pytest.raises(WaitTimeoutError, match="'never'"):
        await view.wait_for_async("never", _terminal, 0.05)
    assert view._waiters == {}


def test_undecodable_records_are_skipped(env: Hub, view: StatusView) -> None:
    env.publish_raw(b"junk", b"not avro at all")
    env.publish_raw(b"junk2", encode_status(status("x"))[:5])  # truncated
    env.publish(status("after", RuntimeStatus.RUNNING))
    view.wait_for("after", lambda s: True, 10)
    assert view.get("junk") is None and view.get("junk2") is None


def test_missing_topic_fails_the_view_with_a_clear_error(env: Hub) -> None:
    v = StatusView()
    feeder = ThreadFeeder(v, env.transport, f"{env.settings.task_hub}.no-such-topic")
    feeder.start()
    try:
        with pytest.raises(TransportError, match="no-such-topic"):
            v.wait_ready(30)
        with pytest.raises(TransportError):
            v.wait_for("x", _terminal, 1)
    finally:
        feeder.stop()


async def test_aiokafka_feeder_materialises_and_wakes(kafka_env: Hub) -> None:
    env = kafka_env
    env.publish(status("pre", RuntimeStatus.COMPLETED), transactional=True)
    v = StatusView()
    feeder = AioKafkaFeeder(v, env.topics.status, PARTITIONS, env.settings.bootstrap_servers)
    await feeder.start()
    try:
        await v.wait_ready_async(30)
        assert v.get("pre") is not None
        waiter = asyncio.create_task(v.wait_for_async("live", _terminal, 10))
        await asyncio.to_thread(env.publish, status("live", RuntimeStatus.RUNNING), "pre")
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await asyncio.to_thread(env.publish, status("live", RuntimeStatus.COMPLETED))
        published = time.monotonic()  # acknowledged by the broker
        result = await asyncio.wait_for(waiter, 10)
        assert result.runtime_status is RuntimeStatus.COMPLETED
        assert time.monotonic() - published < 0.08
        assert v.get("pre") is None  # the tombstone arrived before "live" completed
    finally:
        await feeder.stop()


# -- the view alone (no transport) ------------------------------------------------------


def test_fail_wakes_sync_and_async_waiters() -> None:
    v = StatusView()
    error = TransportError("boom")
    caught: list[BaseException] = []

    def wait() -> None:
        try:
            v.wait_for("x", _terminal, 10)
        except TransportError as exc:
            caught.append(exc)

    t = threading.Thread(target=wait)
    t.start()

    async def main() -> None:
        waiter = asyncio.create_task(v.wait_for_async("x", _terminal, 10))
        await asyncio.sleep(0.02)
        await asyncio.to_thread(v.fail, error)
        with pytest.raises(TransportError, match="boom"):
            await waiter

    asyncio.run(main())
    t.join(5)
    assert caught == [error]
    v.apply([(b"y", encode_status(status("y")))])
    assert v.get("y") is not None  # what was seen stays readable


async def test_a_raising_predicate_fails_only_its_waiter() -> None:
    v = StatusView()

    def broken(s: OrchestrationStatus) -> bool:
        raise RuntimeError("bad predicate")

    bad = asyncio.create_task(v.wait_for_async("p", broken, 5))
    good = asyncio.create_task(v.wait_for_async("p", lambda s: True, 5))
    await asyncio.sleep(0.01)
    await asyncio.to_thread(v.apply, [(b"p", encode_status(status("p")))])
    with pytest.raises(RuntimeError, match="bad predicate"):
        await bad
    assert (await good).instance_id == "p"


async def test_wait_ready_async_resolves_on_mark_ready() -> None:
    v = StatusView()
    waiter = asyncio.create_task(v.wait_ready_async(5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await asyncio.to_thread(v.mark_ready)
    await asyncio.wait_for(waiter, 1)
    with pytest.raises(WaitTimeoutError, match="did not catch up"):
        StatusView().wait_ready(0.01)
