"""The replay executor on built histories: pure, no I/O.

Every :class:`~tests.runtime.helpers.Run` checks at each step that the processor's
cache-miss path (fresh executor, ``replay(history)``, ``step(new)``) produces exactly
what the live executor produced, so every test here is also a replay test.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from durafka.codec.payload import decode_payload
from durafka.errors import (
    ActivityFailed,
    ConfigurationError,
    EventTimeoutError,
    FailureDetails,
    SubOrchestrationFailed,
)
from durafka.registry import Registry
from durafka.runtime.context import OrchestrationContext
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.runtime.retry import RetryPolicy
from durafka.runtime.tasks import when_all

from .helpers import (
    STEP_MS,
    T0,
    Run,
    completed,
    event_raised,
    failed,
    registry_with,
    replay_fresh,
    run_steps,
    scheduled,
    started,
    sub_completed,
    sub_failed,
    timer_created,
    timer_fired,
)

Ctx = OrchestrationContext


def out(run: Run) -> Any:
    """The output of a completed run (plain JSON values)."""
    c = run.last.completion
    assert c is not None and c.kind is EventKind.EXECUTION_COMPLETED, c
    return decode_payload(c.payload)


def failure(run: Run) -> FailureDetails:
    """The failure of a failed run."""
    c = run.last.completion
    assert c is not None and c.kind is EventKind.EXECUTION_FAILED, c
    assert c.failure is not None
    return c.failure


def calls(result_actions: list[HistoryEvent]) -> list[tuple[EventKind, int, str | None, Any]]:
    """(kind, seq, name, decoded payload) of actions, for compact asserts."""
    return [(a.kind, a.seq, a.name, decode_payload(a.payload)) for a in result_actions]


# -- activities (never run here: the tests play the worker) -------------------


def say_hello(name: str) -> str:
    return f"Hello {name}!"


def add_one(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def charge(amount: int) -> str:
    raise ValueError(f"card declined for {amount}")


def flaky(x: int) -> str:
    return str(x)


# -- orchestrations --------------------------------------------------------------


async def hello(ctx: Ctx, name: str) -> str:
    return await ctx.call_activity(say_hello, name)


async def sequence(ctx: Ctx, x: int) -> list[int]:
    seen = []
    for _ in range(5):
        x = await ctx.call_activity(add_one, x)
        seen.append(x)
    return seen


async def fan_out(ctx: Ctx, n: int) -> list[int]:
    return await ctx.when_all([ctx.call_activity(square, i) for i in range(n)])


async def fan_out_catching(ctx: Ctx, n: int) -> str:
    try:
        await when_all([ctx.call_activity(square, i) for i in range(n)])
    except ActivityFailed as e:
        return f"failed: {e.details.message}"
    return "all good"


async def approval(ctx: Ctx) -> str:
    approved = ctx.wait_for_external_event("approve")
    timeout = ctx.create_timer(timedelta(hours=1))
    winner = await ctx.when_any([approved, timeout])
    if winner is timeout:
        return "timed out"
    return f"approved by {approved.result()}"


async def pay(ctx: Ctx, amount: int) -> dict[str, Any]:
    try:
        return {"ok": await ctx.call_activity(charge, amount)}
    except ActivityFailed as e:
        return {
            "error_type": e.details.error_type,
            "message": e.details.message,
            "stack_trace": e.details.stack_trace,
            "str": str(e),
        }


async def pay_uncaught(ctx: Ctx, amount: int) -> str:
    return await ctx.call_activity(charge, amount)


SCENARIOS: dict[str, Callable[[], Run]] = {}


def scenario(fn: Callable[[], Run]) -> Callable[[], Run]:
    """Register a scenario: it steps a Run (which checks replay at every step) and asserts."""
    SCENARIOS[fn.__name__.removeprefix("_")] = fn
    return fn


# -- basic shapes ------------------------------------------------------------------


@scenario
def _hello_world() -> Run:
    run = Run(registry_with(hello, activities=[say_hello]), "hello")
    r = run.start("Kafka")
    assert r.completion is None
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, 0, "say_hello", "Kafka")]
    assert r.actions[0].timestamp == T0
    r = run.step(completed(0, "Hello Kafka!"))
    assert r.actions == []
    assert out(run) == "Hello Kafka!"
    return run


@scenario
def _sequence_of_five() -> Run:
    run = Run(registry_with(sequence, activities=[add_one]), "sequence")
    r = run.start(10)
    for i in range(5):
        assert r.completion is None
        assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, i, "add_one", 10 + i)]
        r = run.step(completed(i, 11 + i))
    assert r.actions == []
    assert out(run) == [11, 12, 13, 14, 15]
    return run


@scenario
def _fan_out_100() -> Run:
    run = Run(registry_with(fan_out, activities=[square]), "fan_out")
    r = run.start(100)
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, i, "square", i) for i in range(100)]
    # Results arrive in reverse order, ten per step: the output keeps the input order.
    for batch in range(10):
        assert run.last.completion is None
        seqs = range(99 - batch * 10, 89 - batch * 10, -1)
        r = run.step(*(completed(s, s * s) for s in seqs))
        assert r.actions == []
    assert out(run) == [i * i for i in range(100)]
    return run


@scenario
def _when_all_failure() -> Run:
    run = Run(registry_with(fan_out_catching, activities=[square]), "fan_out_catching")
    run.start(3)
    run.step(failed(2, ValueError("third")))
    assert run.last.completion is None, "when_all must wait for every child"
    run.step(failed(1, ValueError("second")))
    assert run.last.completion is None
    run.step(completed(0, 0))
    # The first failure in input order, raised once all children finished.
    assert out(run) == "failed: second"
    return run


@scenario
def _when_any_event_wins() -> Run:
    run = Run(registry_with(approval), "approval")
    r = run.start()
    assert [(a.kind, a.seq, a.fire_at) for a in r.actions] == [
        (EventKind.TIMER_CREATED, 0, T0 + 3_600_000)
    ]
    run.step(event_raised("approve", "alice"))
    assert out(run) == "approved by alice"
    return run


@scenario
def _when_any_timeout() -> Run:
    run = Run(registry_with(approval), "approval")
    run.start()
    run.step(timer_fired(0, T0 + 3_600_000), at=T0 + 3_600_000)
    assert out(run) == "timed out"
    return run


@scenario
def _activity_failure_caught() -> Run:
    run = Run(registry_with(pay, activities=[charge]), "pay")
    run.start(42)
    run.step(failed(0, ValueError("card declined for 42")))
    got = out(run)
    assert got["error_type"] == "builtins.ValueError"
    assert got["message"] == "card declined for 42"
    assert "ValueError: card declined for 42" in got["stack_trace"]
    assert "'charge'" in got["str"] and "card declined for 42" in got["str"]
    return run


@scenario
def _activity_failure_uncaught() -> Run:
    run = Run(registry_with(pay_uncaught, activities=[charge]), "pay_uncaught")
    run.start(42)
    run.step(failed(0, ValueError("card declined for 42")))
    f = failure(run)
    assert f.error_type == "durafka.errors.ActivityFailed"
    assert "'charge'" in f.message
    assert "builtins.ValueError: card declined for 42" in f.message
    assert f.stack_trace is not None
    # Both the orchestrator's frames and the activity's original traceback.
    assert "pay_uncaught" in f.stack_trace
    assert "in details_of" in f.stack_trace  # the frame that raised, worker side
    assert "\nValueError: card declined for 42" in f.stack_trace
    return run


def test_activity_failure_without_details_still_fails_clearly() -> None:
    run = Run(registry_with(pay, activities=[charge]), "pay")
    run.start(1)
    run.step(HistoryEvent(EventKind.TASK_FAILED, T0, seq=0))
    assert out(run)["error_type"] == "unknown"


def test_result_that_does_not_decode_fails_at_the_await() -> None:
    async def typed(ctx: Ctx) -> str:
        try:
            await ctx.call_activity(add_one, 1)  # declared -> int
        except ValueError as e:
            return f"caught {type(e).__name__}"
        return "decoded"

    run = Run(registry_with(typed, activities=[add_one]), "typed")
    run.start()
    run.step(completed(0, "not a number"))
    assert out(run) == "caught SerializationError"


def test_event_data_that_does_not_decode_fails_the_instance() -> None:
    async def typed_event(ctx: Ctx) -> int:
        n: int = await ctx.wait_for_external_event("n", type=int)
        return n

    run = Run(registry_with(typed_event), "typed_event")
    run.start()
    run.step(event_raised("n", {"not": "an int"}))
    f = failure(run)
    assert f.error_type == "durafka.errors.SerializationError" and "event 'n'" in f.message


# -- time, ids, randomness, replay flags -------------------------------------------


async def clock(ctx: Ctx) -> list[str]:
    first = ctx.now().isoformat()
    await ctx.call_activity(say_hello, "x")
    return [first, ctx.now().isoformat()]


@scenario
def _now_from_history() -> Run:
    run = Run(registry_with(clock, activities=[say_hello]), "clock")
    run.start(at=T0)
    run.step(completed(0, "hi"), at=T0 + 90_000)
    assert out(run) == [
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:01:30+00:00",
    ]
    return run


async def ids(ctx: Ctx) -> list[Any]:
    first = [str(ctx.new_uuid()) for _ in range(3)]
    rolls = [ctx.random().randint(0, 10**9) for _ in range(3)]
    await ctx.call_activity(say_hello, "x")
    return [first, str(ctx.new_uuid()), rolls, ctx.random().random()]


@scenario
def _uuid_and_random() -> Run:
    run = Run(registry_with(ids, activities=[say_hello]), "ids")
    run.start()
    run.step(completed(0, "hi"))
    first, later, rolls, _ = out(run)
    all_ids = [*first, later]
    assert len(set(all_ids)) == 4, "new_uuid must be distinct within a run"
    assert all(uuid.UUID(u).version == 5 for u in all_ids)
    assert len(set(rolls)) == 3
    return run


def test_uuid_and_random_are_deterministic_per_instance() -> None:
    reg = registry_with(ids, activities=[say_hello])
    outs = []
    for instance_id in ("a", "a", "b"):
        run = Run(reg, "ids", instance_id=instance_id)
        run.start()
        run.step(completed(0, "hi"))
        outs.append(out(run))
    assert outs[0] == outs[1]
    assert outs[0][0] != outs[2][0] and outs[0][2] != outs[2][2]


def test_is_replaying_true_during_replay_false_after(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, bool]] = []

    async def flags(ctx: Ctx) -> None:
        seen.append(("start", ctx.is_replaying))
        ctx.logger.info("before the activity")
        await ctx.call_activity(say_hello, "x")
        seen.append(("after 1", ctx.is_replaying))
        ctx.logger.info("after the activity")
        await ctx.call_activity(say_hello, "y")
        seen.append(("after 2", ctx.is_replaying))

    reg = registry_with(flags, activities=[say_hello])
    caplog.set_level(logging.INFO, logger="durafka.orchestration")
    run = Run(reg, "flags", check_replay=False)
    run.start()
    run.step(completed(0, "x"))
    assert seen == [("start", False), ("after 1", False)]
    assert [r.getMessage() for r in caplog.records] == [
        "[inst-1] before the activity",
        "[inst-1] after the activity",
    ]

    seen.clear()
    caplog.clear()
    fresh = replay_fresh(reg, "inst-1", "flags", run.history)
    assert seen == [("start", True), ("after 1", True)]
    assert not fresh.is_replaying
    assert caplog.records == [], "the replay-safe logger must be silent while replaying"
    fresh.step([completed(1, "y")])
    assert seen[-1] == ("after 2", False)


async def custom(ctx: Ctx) -> None:
    ctx.set_custom_status({"stage": "charging"})
    await ctx.call_activity(say_hello, "x")
    ctx.set_custom_status({"stage": "done"})


@scenario
def _custom_status() -> Run:
    run = Run(registry_with(custom, activities=[say_hello]), "custom")
    assert decode_payload(run.start().custom_status) == {"stage": "charging"}
    assert decode_payload(run.step(completed(0, "x")).custom_status) == {"stage": "done"}
    return run


# -- timers and external events ----------------------------------------------------


async def naps(ctx: Ctx) -> str:
    await ctx.sleep(timedelta(minutes=5))
    await ctx.create_timer(datetime(2024, 1, 2, tzinfo=UTC))
    return "rested"


@scenario
def _durable_timers() -> Run:
    run = Run(registry_with(naps), "naps")
    r = run.start(at=T0)
    five_min = T0 + 300_000
    assert [(a.kind, a.seq, a.fire_at) for a in r.actions] == [
        (EventKind.TIMER_CREATED, 0, five_min)
    ]
    r = run.step(timer_fired(0, five_min), at=five_min)
    next_day = T0 + 86_400_000
    assert [(a.kind, a.seq, a.fire_at) for a in r.actions] == [
        (EventKind.TIMER_CREATED, 1, next_day)
    ]
    assert r.completion is None
    run.step(timer_fired(1, next_day), at=next_day)
    assert out(run) == "rested"
    return run


def test_naive_datetime_timer_fails_the_instance() -> None:
    async def naive(ctx: Ctx) -> None:
        await ctx.create_timer(datetime(2024, 1, 2))

    run = run_steps(registry_with(naive), "naive", None)
    f = failure(run)
    assert f.error_type == "builtins.ValueError" and "timezone-aware" in f.message


async def wait_one(ctx: Ctx) -> Any:
    return await ctx.wait_for_external_event("approve")


@scenario
def _external_event_waited() -> Run:
    run = Run(registry_with(wait_one), "wait_one")
    assert run.start().actions == []
    run.step(event_raised("other", 1))  # another name does not complete the wait
    assert run.last.completion is None
    run.step(event_raised("approve", {"by": "bob"}))
    assert out(run) == {"by": "bob"}
    return run


async def buffered(ctx: Ctx) -> list[Any]:
    await ctx.call_activity(say_hello, "x")
    a1 = await ctx.wait_for_external_event("a")
    b1 = await ctx.wait_for_external_event("b")
    a2 = await ctx.wait_for_external_event("a")
    return [a1, b1, a2]


@scenario
def _external_events_buffered_in_order() -> Run:
    run = Run(registry_with(buffered, activities=[say_hello]), "buffered")
    run.start()
    run.step(event_raised("a", 1), event_raised("b", 2))
    run.step(event_raised("a", 3))
    assert run.last.completion is None
    run.step(completed(0, "x"))
    assert out(run) == [1, 2, 3]
    return run


async def two_waits(ctx: Ctx) -> list[Any]:
    first = ctx.wait_for_external_event("x")
    second = ctx.wait_for_external_event("x")
    return [await second, await first]


@scenario
def _two_waits_same_name() -> Run:
    run = Run(registry_with(two_waits), "two_waits")
    run.start()
    run.step(event_raised("x", "one"))
    assert run.last.completion is None
    run.step(event_raised("x", "two"))
    assert out(run) == ["two", "one"]  # the first wait got the first event
    return run


async def sender(ctx: Ctx) -> None:
    ctx.send_event("other-instance", "ping", {"n": 1})
    await ctx.call_activity(say_hello, "x")


@scenario
def _send_event() -> Run:
    run = Run(registry_with(sender, activities=[say_hello]), "sender")
    r = run.start()
    sent = r.actions[0]
    assert (sent.kind, sent.seq, sent.name, sent.instance_id) == (
        EventKind.EVENT_SENT,
        0,
        "ping",
        "other-instance",
    )
    assert decode_payload(sent.payload) == {"n": 1}
    assert calls(r.actions[1:]) == [(EventKind.TASK_SCHEDULED, 1, "say_hello", "x")]
    run.step(completed(1, "x"))
    assert out(run) is None
    return run


# -- sub-orchestrations ----------------------------------------------------------


async def child(ctx: Ctx, x: int) -> int:
    return x * 2


async def parent(ctx: Ctx, x: int) -> list[Any]:
    a = await ctx.call_sub_orchestrator(child, x)
    b = await ctx.call_sub_orchestrator("child", x + 1, instance_id="fixed-child")
    try:
        await ctx.call_sub_orchestrator(child, -1)
    except SubOrchestrationFailed as e:
        return [a, b, e.details.error_type, e.details.message]
    return [a, b]


@scenario
def _sub_orchestrations() -> Run:
    run = Run(registry_with(parent, child), "parent")
    r = run.start(5)
    [a] = r.actions
    assert (a.kind, a.seq, a.name, a.instance_id) == (
        EventKind.SUB_ORCHESTRATION_CREATED,
        0,
        "child",
        "inst-1:0",  # the default child id is "<parent>:<seq>"
    )
    assert decode_payload(a.payload) == 5
    [b] = run.step(sub_completed(0, 10)).actions
    assert (b.seq, b.instance_id, decode_payload(b.payload)) == (1, "fixed-child", 6)
    [c] = run.step(sub_completed(1, 12)).actions
    assert c.instance_id == "inst-1:2"
    run.step(sub_failed(2, RuntimeError("child broke")))
    assert out(run) == [10, 12, "builtins.RuntimeError", "child broke"]
    return run


# -- retries ----------------------------------------------------------------------

POLICY = RetryPolicy(
    max_attempts=3,
    first_interval=timedelta(seconds=10),
    backoff_coefficient=3.0,
    max_interval=timedelta(seconds=20),
)


async def retrying(ctx: Ctx, x: int) -> str:
    return await ctx.call_activity(flaky, x, retry=POLICY)


def _retry_run() -> Run:
    run = Run(registry_with(retrying, activities=[flaky]), "retrying")
    r = run.start(7)
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, 0, "flaky", 7)]
    return run


@scenario
def _retry_gives_up_after_max_attempts() -> Run:
    run = _retry_run()
    # Attempt 1 fails: a durable timer first_interval later, then attempt 2.
    t1 = T0 + 5_000
    [timer] = run.step(failed(0, ConnectionError("down")), at=t1).actions
    assert (timer.kind, timer.seq, timer.fire_at) == (EventKind.TIMER_CREATED, 1, t1 + 10_000)
    r = run.step(timer_fired(1, t1 + 10_000), at=t1 + 10_000)
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, 2, "flaky", 7)]
    # Attempt 2 fails: 10 s * 3 = 30 s, capped by max_interval at 20 s.
    t2 = t1 + 12_000
    [timer] = run.step(failed(2, ConnectionError("still down")), at=t2).actions
    assert (timer.kind, timer.seq, timer.fire_at) == (EventKind.TIMER_CREATED, 3, t2 + 20_000)
    r = run.step(timer_fired(3, t2 + 20_000), at=t2 + 20_000)
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, 4, "flaky", 7)]
    # Attempt 3 (the last) fails: the instance fails with the last error.
    r = run.step(failed(4, ConnectionError("gone")))
    assert r.actions == []
    f = failure(run)
    assert f.error_type == "durafka.errors.ActivityFailed"
    assert "builtins.ConnectionError: gone" in f.message
    return run


@scenario
def _retry_succeeds_on_second_attempt() -> Run:
    run = _retry_run()
    run.step(failed(0, ConnectionError("down")), at=T0 + 1000)
    run.step(timer_fired(1, T0 + 11_000), at=T0 + 11_000)
    r = run.step(completed(2, "ok"))
    assert r.actions == []
    assert out(run) == "ok"
    return run


@pytest.mark.parametrize(
    "non_retryable",
    [(ValueError,), ("ValueError",), ("builtins.ValueError",), (LookupError, ValueError)],
)
def test_non_retryable_errors_fail_at_once(
    non_retryable: tuple[type[BaseException] | str, ...],
) -> None:
    policy = RetryPolicy(max_attempts=5, non_retryable_errors=non_retryable)

    async def strict(ctx: Ctx) -> str:
        return await ctx.call_activity(flaky, 1, retry=policy)

    run = Run(registry_with(strict, activities=[flaky]), "strict")
    run.start()
    r = run.step(failed(0, ValueError("bad input")))
    assert r.actions == [], "a non-retryable error must not schedule a retry timer"
    assert "builtins.ValueError: bad input" in failure(run).message


def test_errors_not_listed_as_non_retryable_are_retried() -> None:
    policy = RetryPolicy(max_attempts=5, non_retryable_errors=(ValueError,))

    async def strict(ctx: Ctx) -> str:
        return await ctx.call_activity(flaky, 1, retry=policy)

    run = Run(registry_with(strict, activities=[flaky]), "strict")
    run.start()
    [timer] = run.step(failed(0, KeyError("retry me"))).actions
    assert timer.kind is EventKind.TIMER_CREATED


@scenario
def _retry_total_timeout() -> Run:
    policy = RetryPolicy(
        max_attempts=10, first_interval=timedelta(seconds=10), total_timeout=timedelta(seconds=15)
    )

    async def bounded(ctx: Ctx) -> str:
        return await ctx.call_activity(flaky, 1, retry=policy)

    run = Run(registry_with(bounded, activities=[flaky]), "bounded")
    run.start(at=T0)
    # 1 s elapsed + 10 s wait fits in 15 s: retried.
    [timer] = run.step(failed(0, ConnectionError("a")), at=T0 + 1000).actions
    assert timer.fire_at == T0 + 11_000
    run.step(timer_fired(1, T0 + 11_000), at=T0 + 11_000)
    # 12 s elapsed + 20 s wait exceeds 15 s: given up although attempts remain.
    r = run.step(failed(2, ConnectionError("b")), at=T0 + 12_000)
    assert r.actions == []
    assert "ConnectionError: b" in failure(run).message
    return run


@scenario
def _retry_in_fan_out() -> Run:
    async def fan_retry(ctx: Ctx) -> list[str]:
        return await ctx.when_all([ctx.call_activity(flaky, i, retry=POLICY) for i in range(3)])

    run = Run(registry_with(fan_retry, activities=[flaky]), "fan_retry")
    r = run.start()
    assert [a.seq for a in r.actions] == [0, 1, 2]
    [timer] = run.step(completed(0, "0"), failed(1, ConnectionError("x"))).actions
    assert timer.seq == 3
    r = run.step(timer_fired(3, timer.fire_at or 0), completed(2, "2"))
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, 4, "flaky", 1)]
    run.step(completed(4, "1"))
    assert out(run) == ["0", "1", "2"]
    return run


async def retrying_child(ctx: Ctx, x: int) -> int:
    doubled: int = await ctx.call_sub_orchestrator(child, x, retry=RetryPolicy(max_attempts=2))
    return doubled


@scenario
def _sub_orchestration_retry() -> Run:
    run = Run(registry_with(retrying_child, child), "retrying_child")
    [first] = run.start(3).actions
    assert first.instance_id == "inst-1:0"
    [timer] = run.step(sub_failed(0, RuntimeError("x"))).actions
    [second] = run.step(timer_fired(timer.seq, timer.fire_at or 0)).actions
    # A new attempt is a new child instance, with its own deterministic id.
    assert (second.kind, second.instance_id) == (EventKind.SUB_ORCHESTRATION_CREATED, "inst-1:2")
    run.step(sub_completed(2, 6))
    assert out(run) == 6
    return run


def test_retry_policy_delays() -> None:
    assert [POLICY.delay_before(n) for n in (2, 3, 4)] == [
        timedelta(seconds=10),
        timedelta(seconds=20),
        timedelta(seconds=20),
    ]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="first_interval"):
        RetryPolicy(first_interval=timedelta(0))
    with pytest.raises(ValueError, match="backoff_coefficient"):
        RetryPolicy(backoff_coefficient=0.5)


# -- continue_as_new ----------------------------------------------------------------


async def eternal(ctx: Ctx, n: int) -> int:
    if n >= 2:
        return n
    await ctx.sleep(timedelta(hours=1))
    try:
        ctx.continue_as_new(n + 1)
    except Exception:  # proves user code cannot swallow it
        return -1


@scenario
def _continue_as_new() -> Run:
    run = Run(registry_with(eternal), "eternal")
    [timer] = run.start(0).actions
    r = run.step(timer_fired(0, timer.fire_at or 0))
    assert r.completion is not None
    assert r.completion.kind is EventKind.CONTINUED_AS_NEW
    assert decode_payload(r.completion.payload) == 1
    # The next generation starts from an empty history with the new input.
    nxt = Run(run.registry, "eternal")
    nxt.start(2)
    assert out(nxt) == 2
    return run


async def mailbox(ctx: Ctx, gen: int) -> list[Any]:
    if gen == 1:
        return [
            await ctx.wait_for_external_event("a"),
            await ctx.wait_for_external_event("b"),
            await ctx.wait_for_external_event("a"),
        ]
    await ctx.call_activity(say_hello, "x")
    ctx.continue_as_new(1, keep_unprocessed_events=gen == 0)


@scenario
def _continue_as_new_carries_buffered_events() -> Run:
    reg = registry_with(mailbox, activities=[say_hello])
    run = Run(reg, "mailbox")
    run.start(0)
    run.step(event_raised("a", "a1"), event_raised("b", "b1"))
    run.step(event_raised("a", "a2"))
    r = run.step(completed(0, "x"))
    assert r.completion is not None and r.completion.kind is EventKind.CONTINUED_AS_NEW
    # Carried in arrival order, whatever their names.
    assert [(e.name, decode_payload(e.payload)) for e in r.carried_events] == [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
    ]
    nxt = Run(reg, "mailbox")
    nxt.step(started("mailbox", 1), *r.carried_events)
    assert out(nxt) == ["a1", "b1", "a2"]
    return run


def test_continue_as_new_can_drop_buffered_events() -> None:
    run = Run(registry_with(mailbox, activities=[say_hello]), "mailbox")
    run.start(2)
    run.step(event_raised("a", "a1"))
    r = run.step(completed(0, "x"))
    assert r.completion is not None and r.completion.kind is EventKind.CONTINUED_AS_NEW
    assert r.carried_events == []


# -- typed payloads -------------------------------------------------------------------


class Order(BaseModel):
    id: str
    amount: int
    tags: list[str] = []


@dataclass
class Receipt:
    order_id: str
    total: float


SEEN_TYPES: list[type] = []


def bill(order: Order) -> Receipt:
    return Receipt(order.id, order.amount * 1.2)


async def checkout(ctx: Ctx, order: Order) -> Receipt:
    SEEN_TYPES.append(type(order))
    receipt = await ctx.call_activity(bill, order)
    SEEN_TYPES.append(type(receipt))
    note = await ctx.wait_for_external_event("note", type=Order)
    SEEN_TYPES.append(type(note))
    return receipt


@scenario
def _typed_payloads() -> Run:
    SEEN_TYPES.clear()
    run = Run(registry_with(checkout, activities=[bill]), "checkout")
    r = run.start({"id": "o-1", "amount": 10})
    assert decode_payload(r.actions[0].payload) == {"id": "o-1", "amount": 10, "tags": []}
    run.step(completed(0, {"order_id": "o-1", "total": 12.0}))
    run.step(event_raised("note", {"id": "n", "amount": 0}))
    assert out(run) == {"order_id": "o-1", "total": 12.0}
    # Run checks replay at every step, so each type shows up several times.
    assert set(SEEN_TYPES) == {Order, Receipt}
    assert SEEN_TYPES[:2] == [Order, Order] and Receipt in SEEN_TYPES
    return run


def test_typed_input_that_does_not_validate_fails_the_instance() -> None:
    run = run_steps(registry_with(checkout, activities=[bill]), "checkout", {"id": "o-1"})
    f = failure(run)
    assert f.error_type == "durafka.errors.SerializationError"
    assert "input of 'checkout'" in f.message and "amount" in f.message


# -- replay equivalence over every scenario --------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str) -> None:
    """Each scenario's own asserts, plus: replay is equivalent to live stepping.

    Run already checked, at every step, that a fresh executor replaying the history
    so far and stepping the same events returns the same actions, completion,
    custom status and carried events. Here also: if a step's record ended right
    after its incoming events (actions missing), replay re-derives those actions.
    """
    run = SCENARIOS[name]()
    assert run.last.completion is not None, "a scenario must run to completion"
    for start, new, result in run.steps:
        fresh = replay_fresh(run.registry, run.instance_id, run.name, run.history[:start] + new)
        again = fresh.step([])
        assert again.actions == result.actions
        assert again.completion == result.completion


def test_scenarios_are_all_covered() -> None:
    # Guards against a scenario silently dropping out of the parametrisation.
    assert len(SCENARIOS) >= 25


# -- non-determinism ----------------------------------------------------------------


def _history_of(
    fn: Callable[..., Any], *steps: list[HistoryEvent], input: Any = None
) -> list[HistoryEvent]:
    reg = Registry()
    reg.add_orchestration(fn, name="order")
    return run_steps(reg, "order", input, *steps).history


def _replay_with(
    fn: Callable[..., Any], history: list[HistoryEvent], *new: HistoryEvent
) -> FailureDetails:
    reg = Registry()
    reg.add_orchestration(fn, name="order")
    ex = replay_fresh(reg, "inst-1", "order", history)
    r = ex.step(list(new))
    assert r.actions == [], "a diverged orchestrator must not emit actions"
    assert r.completion is not None and r.completion.kind is EventKind.EXECUTION_FAILED
    assert r.completion.failure is not None
    assert r.completion.failure.error_type == "durafka.errors.NonDeterminismError"
    return r.completion.failure


async def calls_a_then_b(ctx: Ctx) -> None:
    await ctx.call_activity("a")
    await ctx.call_activity("b")


def test_nondeterminism_different_activity_name() -> None:
    history = _history_of(calls_a_then_b, [completed(0)])

    async def calls_c(ctx: Ctx) -> None:
        await ctx.call_activity("a")
        await ctx.call_activity("c")

    f = _replay_with(calls_c, history, completed(1))
    assert "#1" in f.message
    assert "call_activity('b')" in f.message and "call_activity('c')" in f.message
    assert f.message.index("'b'") < f.message.index("'c'"), "expected (history) comes first"


def test_nondeterminism_different_kind() -> None:
    history = _history_of(calls_a_then_b)

    async def sleeps(ctx: Ctx) -> None:
        await ctx.sleep(timedelta(seconds=1))

    f = _replay_with(sleeps, history, completed(0, "x"))
    assert "#0" in f.message
    assert "call_activity('a')" in f.message and "create_timer()" in f.message


def test_nondeterminism_action_no_longer_made_while_waiting() -> None:
    history = _history_of(calls_a_then_b, [completed(0)])

    async def waits_instead(ctx: Ctx) -> None:
        await ctx.call_activity("a")
        await ctx.wait_for_external_event("go")

    f = _replay_with(waits_instead, history)
    assert "#1" in f.message and "call_activity('b')" in f.message
    assert "did not make that call" in f.message


def test_nondeterminism_action_no_longer_made_before_returning() -> None:
    history = _history_of(calls_a_then_b, [completed(0)], [completed(1)])

    async def returns_early(ctx: Ctx) -> str:
        await ctx.call_activity("a")
        return "done early"

    f = _replay_with(returns_early, history)
    assert "#1" in f.message and "call_activity('b')" in f.message


def test_nondeterminism_different_sub_orchestration_target() -> None:
    async def v1(ctx: Ctx) -> None:
        await ctx.call_sub_orchestrator("child", instance_id="child-1")

    async def v2(ctx: Ctx) -> None:
        await ctx.call_sub_orchestrator("child", instance_id="child-2")

    f = _replay_with(v2, _history_of(v1))
    assert "#0" in f.message and "child-1" in f.message and "child-2" in f.message


def test_nondeterminism_different_event_target() -> None:
    async def v1(ctx: Ctx) -> None:
        ctx.send_event("x", "ping")
        await ctx.wait_for_external_event("go")

    async def v2(ctx: Ctx) -> None:
        ctx.send_event("y", "ping")
        await ctx.wait_for_external_event("go")

    f = _replay_with(v2, _history_of(v1))
    assert "#0" in f.message and "send_event" in f.message


def test_nondeterminism_on_a_hand_written_history() -> None:
    history = [
        HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0),
        started("order"),
        timer_created(0, T0 + 1000),
    ]
    f = _replay_with(calls_a_then_b, history, timer_fired(0, T0 + 1000))
    assert "create_timer()" in f.message and "call_activity('a')" in f.message


def test_new_trailing_calls_are_not_nondeterminism() -> None:
    # Code that only adds calls after the recorded point is a normal continuation.
    history = [
        HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0),
        started("order"),
        scheduled(0, "a"),
        HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0 + STEP_MS),
        completed(0),
    ]
    reg = Registry()
    reg.add_orchestration(calls_a_then_b, name="order")
    r = replay_fresh(reg, "inst-1", "order", history).step([])
    assert calls(r.actions) == [(EventKind.TASK_SCHEDULED, 1, "b", None)]
    assert r.completion is None


# -- misuse -------------------------------------------------------------------------


def _usage_failure(fn: Callable[..., Any]) -> FailureDetails:
    run = run_steps(registry_with(fn), fn.__name__, None)
    f = failure(run)
    assert f.error_type == "durafka.errors.OrchestrationUsageError", f
    assert "not a durafka task" in f.message
    return f


def test_awaiting_asyncio_sleep_zero_fails_clearly() -> None:
    async def naps_with_asyncio(ctx: Ctx) -> None:
        await asyncio.sleep(0)

    f = _usage_failure(naps_with_asyncio)
    assert "asyncio.sleep()" in f.message and "ctx.sleep()" in f.message


def test_awaiting_asyncio_sleep_with_delay_fails_clearly() -> None:
    async def naps_long(ctx: Ctx) -> None:
        await asyncio.sleep(1)

    f = _usage_failure(naps_long)
    assert "ctx.sleep()" in f.message


def test_awaiting_a_foreign_future_fails_clearly() -> None:
    loop = asyncio.new_event_loop()
    try:

        async def awaits_future(ctx: Ctx) -> None:
            await loop.create_future()

        f = _usage_failure(awaits_future)
        assert "Future" in f.message
    finally:
        loop.close()


def test_unknown_orchestration_fails_naming_it() -> None:
    run = run_steps(registry_with(hello), "no_such_thing", None)
    f = failure(run)
    assert f.error_type == "durafka.errors.UnknownFunctionError"
    assert "'no_such_thing'" in f.message and "hello" in f.message


def test_orchestrator_exception_fails_the_instance_with_details() -> None:
    async def broken(ctx: Ctx) -> None:
        await ctx.call_activity(say_hello, "x")
        raise KeyError("missing")

    run = run_steps(
        registry_with(broken, activities=[say_hello]), "broken", None, [completed(0, "x")]
    )
    f = failure(run)
    assert f.error_type == "builtins.KeyError" and "missing" in f.message
    assert f.stack_trace is not None and "broken" in f.stack_trace


def test_unserialisable_output_fails_the_instance() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"  # the same on every replay, unlike object()'s address

    async def returns_object(ctx: Ctx) -> Any:
        return Opaque()

    f = failure(run_steps(registry_with(returns_object), "returns_object", None))
    assert f.error_type == "durafka.errors.SerializationError"
    assert "output of 'returns_object'" in f.message


# -- registry validation --------------------------------------------------------------


def test_registry_rejects_a_sync_orchestration() -> None:
    def sync_orch(ctx: Ctx) -> None:
        return None

    with pytest.raises(ConfigurationError, match="async def"):
        Registry().add_orchestration(sync_orch)


@pytest.mark.parametrize("arity", [0, 3])
def test_registry_rejects_bad_orchestration_arity(arity: int) -> None:
    async def none() -> None: ...

    async def too_many(ctx: Ctx, a: int, b: int) -> None: ...

    fn = none if arity == 0 else too_many
    with pytest.raises(ConfigurationError, match=r"\(ctx, input\) or \(ctx\)"):
        Registry().add_orchestration(fn)


def test_registry_rejects_required_keyword_only_parameters() -> None:
    async def kw(ctx: Ctx, *, x: int) -> None: ...

    def act(*, x: int) -> None: ...

    with pytest.raises(ConfigurationError, match="keyword-only"):
        Registry().add_orchestration(kw)
    with pytest.raises(ConfigurationError, match="keyword-only"):
        Registry().add_activity(act)


def test_registry_rejects_activity_with_two_inputs_and_duplicate_names() -> None:
    def two(a: int, b: int) -> None: ...

    reg = Registry()
    with pytest.raises(ConfigurationError, match="at most one input"):
        reg.add_activity(two)
    reg.add_orchestration(hello)
    reg.add_orchestration(hello)  # the same function twice is fine
    with pytest.raises(ConfigurationError, match="already registered"):
        reg.add_orchestration(sequence, name="hello")


def test_registry_records_adapters_and_names() -> None:
    reg = Registry()
    d = reg.add_orchestration(checkout)
    assert d.takes_input and d.input_adapter is not None and d.output_adapter is not None
    assert reg.add_orchestration(approval).takes_input is False
    a = reg.add_activity(say_hello, name="greet")
    assert reg.name_of(say_hello, reg.activities) == "greet"
    assert reg.name_of("anything", reg.activities) == "anything"
    assert a.is_async is False


# -- property: fan-out completion order never matters -------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(min_value=1, max_value=12))
def test_fan_out_any_completion_order(data: st.DataObject, n: int) -> None:
    order = data.draw(st.permutations(range(n)), label="completion order")
    fail = data.draw(st.sets(st.integers(0, n - 1), max_size=n), label="failing seqs")
    cuts = sorted(
        data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1) if n > 1 else st.just(set()))
    )
    run = Run(registry_with(fan_out_catching, activities=[square]), "fan_out_catching")
    run.start(n)
    bounds = [0, *cuts, n]
    for lo, hi in itertools.pairwise(bounds):
        assert run.last.completion is None, "completed before every child finished"
        batch = order[lo:hi]
        run.step(
            *(failed(s, ValueError(f"e{s}")) if s in fail else completed(s, s * s) for s in batch)
        )
    # Run checked replay equivalence at every step; the outcome ignores the order.
    assert out(run) == (f"failed: e{min(fail)}" if fail else "all good")


# -- wait_for_external_event(timeout=...) --------------------------------------------


async def _approval_with_timeout(ctx: OrchestrationContext) -> str:
    try:
        value = await ctx.wait_for_external_event("approval", timeout=timedelta(hours=72))
    except EventTimeoutError:
        return "escalated"
    return f"approved:{value}"


def test_event_wait_times_out_on_its_durable_timer() -> None:
    run = Run(registry_with(_approval_with_timeout), "_approval_with_timeout")
    first = run.start()
    (timer,) = first.actions
    assert timer.kind is EventKind.TIMER_CREATED
    assert timer.fire_at == T0 + 72 * 3600 * 1000
    result = run.step(timer_fired(timer.seq, timer.fire_at))
    assert result.completion is not None
    assert result.completion.payload == b'"escalated"'


def test_event_arriving_before_the_timeout_cancels_the_timer() -> None:
    run = Run(registry_with(_approval_with_timeout), "_approval_with_timeout")
    (_timer,) = run.start().actions
    result = run.step(event_raised("approval", "yes"))
    assert result.completion is not None
    assert result.completion.payload == b'"approved:yes"'


def test_default_child_ids_differ_across_continue_as_new_generations() -> None:
    async def parent(ctx: OrchestrationContext) -> None:
        await ctx.call_sub_orchestrator("child")

    registry = registry_with(parent)
    ids = []
    for generation in (0, 1, 2):
        ex = OrchestrationExecutor(registry, "p", "parent", generation=generation)
        result = ex.step([HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0), started("parent")])
        ids.append(result.actions[0].instance_id)
    assert ids == ["p:0", "p:g1:0", "p:g2:0"]


def test_a_finished_executor_is_freed_without_the_garbage_collector() -> None:
    # A processor drops thousands of finished executors a second: in a reference
    # cycle (executor <-> context) each would wait for a collection.
    async def greets(ctx: Ctx, name: str) -> str:
        return str(await ctx.call_activity(add_one, len(name)))

    ex = OrchestrationExecutor(registry_with(greets, activities=[add_one]), "inst-1", "greets")
    ex.step([HistoryEvent(EventKind.EXECUTION_STARTED, T0, name="greets", payload=b'"ada"')])
    result = ex.step([completed(0, 4)])
    assert result.completion is not None and result.completion.kind is EventKind.EXECUTION_COMPLETED
    # Counted by the collector rather than watched with a weak reference: the
    # compiled build's executor (mypyc) takes no weak references.
    gc.disable()
    try:
        gc.collect()  # whatever else the test left behind
        del ex, result
        assert gc.collect() == 0, "the finished executor was left in a reference cycle"
    finally:
        gc.enable()


async def sleeps_then_calls(ctx: Ctx) -> Any:
    await ctx.sleep(timedelta(minutes=1))
    return await ctx.call_activity("add_one", 1)


def test_a_completion_of_another_kind_is_not_awaited() -> None:
    """A task result carrying a pending timer's sequence id does not complete the timer."""
    run = Run(registry_with(sleeps_then_calls, activities=[add_one]), "sleeps_then_calls")
    run.start()
    [timer] = run.last.actions
    assert timer.kind is EventKind.TIMER_CREATED
    assert not run.executor.is_waiting_for(completed(timer.seq, 99))
    assert run.executor.is_waiting_for(timer_fired(timer.seq, timer.fire_at or 0))


def test_default_child_ids_differ_between_executions_of_one_id() -> None:
    """Sequence ids restart with a new execution: its children get other default ids."""

    async def parent(ctx: Ctx) -> Any:
        return await ctx.call_sub_orchestrator("child")

    def child_id(execution: str | None) -> str | None:
        ex = OrchestrationExecutor(registry_with(parent), "p", "parent")
        start = HistoryEvent(EventKind.EXECUTION_STARTED, T0, name="parent", execution_id=execution)
        [action] = ex.step([HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0), start]).actions
        return action.instance_id

    assert child_id(None) == "p:0"  # histories started before execution ids replay as before
    assert child_id("aaaaaaaa1111") == "p:aaaaaaaa:0"
    assert child_id("bbbbbbbb2222") == "p:bbbbbbbb:0"


# -- ids an orchestration hands out ----------------------------------------------------


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda ctx: ctx.call_sub_orchestrator("child", instance_id="v\x00retry"), "NUL"),
        (lambda ctx: ctx.call_sub_orchestrator("child", instance_id="@c@k"), "entity ids"),
        (lambda ctx: ctx.send_event("", "go"), "empty"),
    ],
)
def test_an_invalid_target_id_fails_the_orchestration_at_the_call(
    call: Callable[[OrchestrationContext], Any], word: str
) -> None:
    async def hands_out(ctx: OrchestrationContext) -> None:
        task = call(ctx)
        if task is not None:
            await task

    run = Run(registry_with(hands_out), "hands_out")
    result = run.start()
    assert result.actions == []
    completion = result.completion
    assert completion is not None and completion.kind is EventKind.EXECUTION_FAILED
    assert completion.failure is not None
    assert completion.failure.error_type.endswith("InvalidInstanceIdError")
    assert word in completion.failure.message


def test_a_default_child_id_over_the_limit_fails_instead_of_being_dead_lettered() -> None:
    async def parent_of_long_id(ctx: OrchestrationContext) -> None:
        await ctx.call_sub_orchestrator("child")

    run = Run(registry_with(parent_of_long_id), "parent_of_long_id", instance_id="p" * 255)
    completion = run.start().completion
    assert completion is not None and completion.failure is not None
    assert "longer than 256" in completion.failure.message
