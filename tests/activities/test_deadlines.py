"""Deadlines and heartbeats seen from the worker: a hung activity holds nothing back.

A worker commits the contiguous prefix of finished tasks; before, one hung
activity held back every later offset of its partition for as long as it hung
(everything after it ran again on every rebalance). Now a task past its
deadline (the call's ``timeout``) or past its heartbeat timeout no longer holds
its offset: the orchestration has failed that attempt already.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import durafka
from durafka.codec.payload import encode_payload
from durafka.codec.records import ActivityTask
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.transport import Transport
from tests.activities.workers import (
    Running,
    assert_all_committed,
    committed_offset,
    produce_tasks,
    read_events,
    read_results,
)
from tests.support.waiting import wait_until


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _task(instance: str, name: str, seq: int, **timeouts: int | None) -> ActivityTask:
    return ActivityTask(instance, seq, 1, name, encode_payload(seq), _now_ms(), None, **timeouts)


def _registry(gate: threading.Event, runs: Counter[str]) -> Registry:
    registry = Registry()

    def hangs(x: int) -> int:
        runs["hangs"] += 1
        assert gate.wait(30)
        return x

    def quick(x: int) -> int:
        runs["quick"] += 1
        return x

    def beats(ctx: durafka.ActivityContext, x: int) -> int:
        runs["beats"] += 1
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            ctx.heartbeat({"x": x})  # as fast as it can: the worker sends few
            time.sleep(0.001)
        return x

    for fn in (hangs, quick, beats):
        registry.add_activity(fn)
    return registry


def test_a_task_past_its_deadline_is_not_started(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    gate = threading.Event()
    late = _task("d", "quick", 0, deadline=_now_ms() - 1)
    produce_tasks(transport, hub, [late, _task("d", "quick", 1)])
    running = start_worker(_registry(gate, runs))
    assert set(read_results(transport, hub, 1)) == {("d", 1, 1)}
    assert_all_committed(transport, hub)
    assert runs == Counter({"quick": 1}) and running.worker.expired == 1


def test_a_task_past_its_deadline_no_longer_holds_back_the_offsets(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    gate = threading.Event()
    try:
        start_worker(_registry(gate, runs))
        produce_tasks(transport, hub, [_task("p", "quick", 0)])
        read_results(transport, hub, 1)  # the worker is up: the next task starts at once
        # One instance, one partition: 1 hangs past its deadline, 2 and 3 finish at once.
        hung = _task("p", "hangs", 1, deadline=_now_ms() + 1000)
        produce_tasks(transport, hub, [hung, _task("p", "quick", 2), _task("p", "quick", 3)])
        read_results(transport, hub, 3)
        wait_until(
            lambda: committed_offset(transport, hub, "p") == 4, what="offsets past the hung task"
        )
        assert runs["hangs"] == 1  # still hanging
    finally:
        gate.set()
    threading.Event().wait(0.3)
    # Its late result is dropped: the orchestration failed that attempt already.
    assert set(read_results(transport, hub, 3)) == {("p", 0, 1), ("p", 2, 1), ("p", 3, 1)}


def test_a_task_without_heartbeats_no_longer_holds_back_the_offsets(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    gate = threading.Event()
    hung = _task("h", "hangs", 0, heartbeat_timeout_ms=500)
    produce_tasks(transport, hub, [hung, _task("h", "quick", 1)])
    try:
        start_worker(_registry(gate, runs))
        wait_until(
            lambda: committed_offset(transport, hub, "h") == 2, what="offsets past the hung task"
        )
        events = read_events(transport, hub, lambda es: len(es) >= 2)
    finally:
        gate.set()
    # The start heartbeat of 0 (it arms the orchestration's timer), the result of 1.
    assert sorted((e.kind.value, e.seq) for e in events) == [
        ("TASK_COMPLETED", 1),
        ("TASK_HEARTBEAT", 0),
    ]
    [beat] = [e for e in events if e.kind is EventKind.TASK_HEARTBEAT]
    assert beat.heartbeat_timeout_ms == 500 and beat.name == "hangs"


def test_heartbeats_are_sent_at_most_every_half_timeout(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    produce_tasks(transport, hub, [_task("b", "beats", 0, heartbeat_timeout_ms=1000)])
    start_worker(_registry(threading.Event(), runs))

    events = read_events(
        transport, hub, lambda es: any(e.kind is EventKind.TASK_COMPLETED for e in es)
    )
    beats = [e for e in events if e.kind is EventKind.TASK_HEARTBEAT]
    # The activity called heartbeat() hundreds of times in 1.2 s: the start beat, then
    # at most one per half timeout (0.5 s).
    assert 2 <= len(beats) <= 4, [e.kind for e in events]
    assert beats[-1].payload is not None and beats[-1].payload.startswith(b'{"x":0')
    assert runs["beats"] == 1
    assert_all_committed(transport, hub)
