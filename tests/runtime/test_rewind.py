"""Planning rewinds and resets from histories (pure): which failures are undone, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from durafka.entities import EntityId
from durafka.errors import ActivityFailed, RewindError
from durafka.runtime.context import OrchestrationContext
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import EventKind, undone_events
from durafka.runtime.rewind import plan_reset, plan_rewind, rewound_event

from .helpers import Run, completed, failed, registry_with

Ctx = OrchestrationContext


def work(x: str) -> str:
    return x


async def sequence(ctx: Ctx, _: Any = None) -> list[str]:
    return [await ctx.call_activity("work", "a"), await ctx.call_activity("work", "b")]


async def handles_then_fails(ctx: Ctx, _: Any = None) -> str:
    try:
        await ctx.call_activity("work", "a")
    except ActivityFailed:
        await ctx.call_activity("work", "compensate")
    return await ctx.call_activity("work", "b")


async def bug(ctx: Ctx, _: Any = None) -> None:
    await ctx.call_activity("work", "a")
    raise ValueError("bug")


async def both(ctx: Ctx, _: Any = None) -> list[str]:
    first = ctx.call_activity("work", "a")
    second = ctx.call_activity("work", "b")
    return [await second, await first]


async def locked(ctx: Ctx, _: Any = None) -> str:
    async with ctx.lock(EntityId("Counter", "c")):
        return await ctx.call_activity("work", "a")


REGISTRY = registry_with(sequence, handles_then_fails, bug, both, locked, activities=[work])


def _failed_run(name: str, *outcomes: Any) -> Run:
    run = Run(REGISTRY, name)
    run.start()
    for outcome in outcomes:
        run.step(*outcome)
    assert run.last.completion is not None
    assert run.last.completion.kind is EventKind.EXECUTION_FAILED
    return run


def _replayed(history: list[Any], retried: list[int]) -> OrchestrationExecutor:
    ex = OrchestrationExecutor(REGISTRY, "inst-1", history[1].name)
    ex.replay([*history, rewound_event(0, "r", retried)])
    return ex


def test_the_failed_call_is_retried_and_what_succeeded_is_kept() -> None:
    run = _failed_run("sequence", [completed(0, "a")], [failed(1, RuntimeError("down"))])
    assert plan_rewind(REGISTRY, "inst-1", run.history) == [1]
    ex = _replayed(run.history, [1])
    assert not ex.is_complete and ex.pending_calls() == {1: EventKind.TASK_SCHEDULED}


def test_a_handled_failure_stays_and_only_the_unhandled_one_is_retried() -> None:
    run = _failed_run(
        "handles_then_fails",
        [failed(0, RuntimeError("a"))],
        [completed(1, "compensated")],
        [failed(2, RuntimeError("b"))],
    )
    assert plan_rewind(REGISTRY, "inst-1", run.history) == [2]


def test_an_unawaited_failure_behind_another_call_is_retried_with_it() -> None:
    # ``a`` fails first while ``b`` is awaited; ``b`` fails later, the code raises b's.
    run = _failed_run("both", [failed(0, RuntimeError("a")), failed(1, RuntimeError("b"))])
    assert plan_rewind(REGISTRY, "inst-1", run.history) == [0, 1]


def test_rewinds_of_rewinds_undo_the_latest_failure_of_a_call() -> None:
    run = _failed_run("sequence", [completed(0, "a")], [failed(1, RuntimeError("one"))])
    history = [*run.history, rewound_event(1, "again", [1])]
    # The retried call fails again: the same sequence id, a second failure.
    history += [failed(1, RuntimeError("two")), run.history[-1]]
    assert plan_rewind(REGISTRY, "inst-1", history) == [1]
    twice = [*history, rewound_event(2, "once more", [1])]
    assert len(undone_events(twice)) == 4  # both failures of #1, both execution failures
    ex = OrchestrationExecutor(REGISTRY, "inst-1", "sequence")
    ex.replay(twice)
    assert not ex.is_complete and ex.divergence is None


@pytest.mark.parametrize(
    ("name", "steps", "message"),
    [
        ("bug", [[completed(0, "a")]], "failed in its own code"),
        ("locked", None, "inside a ctx.lock block"),
    ],
)
def test_what_a_rewind_cannot_repair_is_refused(
    name: str, steps: list[Any] | None, message: str
) -> None:
    if steps is None:  # locked: the lock is granted, the activity fails inside the block
        run = Run(REGISTRY, name)
        run.start()
        from durafka.runtime.history import HistoryEvent

        run.step(HistoryEvent(EventKind.LOCK_GRANTED, 0, seq=0, instance_id="@Counter@c"))
        run.step(failed(1, RuntimeError("down")))
    else:
        run = _failed_run(name, *steps)
    with pytest.raises(RewindError, match=message):
        plan_rewind(REGISTRY, "inst-1", run.history)


def test_a_running_instance_has_nothing_to_rewind() -> None:
    run = Run(REGISTRY, "sequence")
    run.start()
    with pytest.raises(RewindError, match="has not failed"):
        plan_rewind(REGISTRY, "inst-1", run.history)


def test_reset_keeps_the_prefix_and_reapplies_later_events() -> None:
    run = Run(REGISTRY, "sequence")
    run.start()
    run.step(completed(0, "a"))
    point = len(run.history)  # the step that takes b's result comes next
    run.step(completed(1, "b"))
    plan = plan_reset(REGISTRY, "inst-1", run.history, point - 1)
    assert plan.prefix == run.history[: point - 1]
    assert plan.reapplied == []
    with pytest.raises(RewindError, match="ended before that point"):
        plan_reset(REGISTRY, "inst-1", run.history, len(run.history))
    with pytest.raises(RewindError, match="choose an index"):
        plan_reset(REGISTRY, "inst-1", run.history, 0)
