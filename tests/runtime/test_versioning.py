"""Changing running code: ``ctx.patched`` / ``ctx.deprecate_patch`` and versions by name.

Histories are built by running the *old* code (the history a running instance
has), then replayed by the *new* code, as the processor does on a cache miss
after a deploy.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from durafka.errors import ConfigurationError, UnknownFunctionError
from durafka.registry import Registry
from durafka.runtime.context import OrchestrationContext
from durafka.runtime.history import EventKind, HistoryEvent

from .helpers import T0, Run, completed, registry_with, replay_fresh

Ctx = OrchestrationContext


def charge(order: str) -> str:
    return f"charged {order}"


def check_fraud(order: str) -> str:
    return f"checked {order}"


def ship(order: str) -> str:
    return f"shipped {order}"


ACTIVITIES = [charge, check_fraud, ship]


async def saga_v1(ctx: Ctx, order: str) -> list[Any]:
    """The running code: charge, then ship."""
    return [await ctx.call_activity("charge", order), await ctx.call_activity("ship", order)]


async def saga_patched(ctx: Ctx, order: str) -> list[Any]:
    """The change: a fraud check before charging, for executions that can take it."""
    done = []
    if ctx.patched("fraud-check"):
        done.append(await ctx.call_activity("check_fraud", order))
    done.append(await ctx.call_activity("charge", order))
    done.append(await ctx.call_activity("ship", order))
    return done


async def saga_deprecated(ctx: Ctx, order: str) -> list[Any]:
    """Every execution that could take the old branch finished: only the new code is left."""
    ctx.deprecate_patch("fraud-check")
    return [
        await ctx.call_activity("check_fraud", order),
        await ctx.call_activity("charge", order),
        await ctx.call_activity("ship", order),
    ]


def registry_of(fn: Any) -> Registry:
    reg = registry_with(activities=ACTIVITIES)
    reg.add_orchestration(fn, name="saga")
    return reg


def run_to_end(run: Run, results: list[Any]) -> list[Any]:
    """Answer each scheduled activity in turn; the orchestration's output."""
    for value in results:
        [task] = [a for a in run.last.actions if a.kind is EventKind.TASK_SCHEDULED]
        run.step(completed(task.seq, value))
    completion = run.last.completion
    assert completion is not None and completion.kind is EventKind.EXECUTION_COMPLETED, completion
    return _output(completion)


def _output(completion: HistoryEvent) -> list[Any]:
    return json.loads(completion.payload or b"null")  # type: ignore[no-any-return]


def history_of(fn: Any, results: list[Any], *, stop_after: int | None = None) -> list[HistoryEvent]:
    """The history old code ``fn`` writes, answering ``results`` in turn."""
    run = Run(registry_of(fn), "saga")
    run.start("o-1")
    for value in results[:stop_after]:
        [task] = [a for a in run.last.actions if a.kind is EventKind.TASK_SCHEDULED]
        run.step(completed(task.seq, value))
    return run.history


def test_a_new_execution_takes_the_patched_branch_and_records_a_marker() -> None:
    run = Run(registry_of(saga_patched), "saga")
    run.start("o-1")
    marker, check = run.last.actions
    assert (marker.kind, marker.name, marker.seq) == (EventKind.MARKER_RECORDED, "fraud-check", 0)
    assert (check.kind, check.name) == (EventKind.TASK_SCHEDULED, "check_fraud")
    assert run_to_end(run, ["ok", "charged", "shipped"]) == ["ok", "charged", "shipped"]


def test_a_running_instance_of_the_old_code_keeps_the_old_branch_after_the_deploy() -> None:
    """Started on v1 and halfway through when the patched code is deployed: it replays
    without the marker, takes the old branch, and stays on it in its new steps."""
    old = history_of(saga_v1, ["charged"], stop_after=1)
    ex = replay_fresh(registry_of(saga_patched), "inst-1", "saga", old)
    # Nothing new: the replay reached ship(), which history recorded already.
    assert not ex.step([HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0 + 5000)]).actions
    result = ex.step([completed(1, "shipped")])
    assert result.completion is not None
    assert _output(result.completion) == ["charged", "shipped"]
    assert ex.patched("fraud-check") is False  # the answer holds for the execution


def test_a_history_with_the_marker_replays_on_the_patched_branch() -> None:
    new = history_of(saga_patched, ["ok"], stop_after=1)
    ex = replay_fresh(registry_of(saga_patched), "inst-1", "saga", new)
    assert ex.patched("fraud-check") is True
    result = ex.step([HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0 + 9000)])
    assert result.completion is None and not result.actions  # charge() was recorded already


def test_deprecate_patch_replays_histories_with_and_without_the_marker() -> None:
    with_marker = history_of(saga_patched, ["ok", "charged"], stop_after=2)
    ex = replay_fresh(registry_of(saga_deprecated), "inst-1", "saga", with_marker)
    result = ex.step([completed(2 + 1, "shipped")])
    assert result.completion is not None and _output(result.completion) == [
        "ok",
        "charged",
        "shipped",
    ]
    # A new execution under the deprecated code records no marker...
    run = Run(registry_of(saga_deprecated), "saga")
    run.start("o-2")
    [check] = run.last.actions
    assert (check.kind, check.name, check.seq) == (EventKind.TASK_SCHEDULED, "check_fraud", 0)

    # ...so its history replays once the call is removed from the code too.
    async def saga_final(ctx: Ctx, order: str) -> list[Any]:
        return [
            await ctx.call_activity("check_fraud", order),
            await ctx.call_activity("charge", order),
            await ctx.call_activity("ship", order),
        ]

    replay_fresh(registry_of(saga_final), "inst-2", "saga", run.history)


def test_a_marker_recorded_elsewhere_is_a_non_determinism_error() -> None:
    """The patch moved: history has the marker before charge(), the code now asks after."""

    async def saga_moved(ctx: Ctx, order: str) -> list[Any]:
        charged = await ctx.call_activity("charge", order)
        if ctx.patched("fraud-check"):
            await ctx.call_activity("check_fraud", order)
        return [charged]

    recorded = history_of(saga_patched, ["ok", "charged"], stop_after=2)
    ex = replay_fresh(registry_of(saga_moved), "inst-1", "saga", recorded)
    result = ex.step([])
    assert result.completion is not None
    assert result.completion.failure is not None
    assert result.completion.failure.error_type == "durafka.errors.NonDeterminismError"


def test_new_executions_run_the_latest_version_running_ones_keep_theirs() -> None:
    reg = registry_with(activities=ACTIVITIES)
    reg.add_orchestration(saga_v1, name="saga", version="1")
    reg.add_orchestration(saga_deprecated, name="saga", version="10")
    reg.add_orchestration(saga_patched, name="saga", version="2")
    assert reg.orchestrations["saga"].version == "10", "versions order as numbers"
    assert reg.orchestration_version("saga", "1").fn is saga_v1
    # A history from before versions existed runs the lowest version.
    assert reg.orchestration_version("saga", None).fn is saga_v1
    start = HistoryEvent(EventKind.EXECUTION_STARTED, T0, name="saga", payload=b'"o"', version="2")
    ex = replay_fresh(reg, "inst-1", "saga", [HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0)])
    [marker, _] = ex.step([start]).actions
    assert marker.kind is EventKind.MARKER_RECORDED  # version 2 is the patched code


def test_an_unregistered_version_fails_the_instance_with_what_to_do() -> None:
    reg = registry_with(activities=ACTIVITIES)
    reg.add_orchestration(saga_patched, name="saga", version="2")
    with pytest.raises(UnknownFunctionError, match=r"version '1' of orchestration 'saga'"):
        reg.orchestration_version("saga", "1")
    ex = replay_fresh(reg, "inst-1", "saga", [])
    start = HistoryEvent(EventKind.EXECUTION_STARTED, T0, name="saga", payload=b'"o"', version="1")
    completion = ex.step([HistoryEvent(EventKind.ORCHESTRATOR_STARTED, T0), start]).completion
    assert completion is not None and completion.failure is not None
    assert "keep it registered" in completion.failure.message


def test_versions_must_be_numbers() -> None:
    with pytest.raises(ConfigurationError, match="dotted numbers"):
        Registry().add_orchestration(saga_v1, name="saga", version="beta")
