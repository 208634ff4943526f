"""Durable tasks and their combinators, without an executor."""

from __future__ import annotations

from typing import Any

import pytest

from durafka.runtime.tasks import CompletableTask, Task, when_all, when_any


def _tasks(n: int) -> list[CompletableTask[Any]]:
    return [CompletableTask() for _ in range(n)]


def test_pending_task_result_raises_and_await_yields_itself() -> None:
    t: CompletableTask[int] = CompletableTask()
    assert not t.is_complete
    with pytest.raises(RuntimeError, match="not complete"):
        t.result()
    gen = t.__await__()
    assert next(gen) is t  # the executor sees the task it must wait for
    t.complete(7)
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == 7


def test_completed_task_does_not_suspend() -> None:
    t: CompletableTask[str] = CompletableTask()
    t.complete("x")
    with pytest.raises(StopIteration) as stop:
        next(t.__await__())
    assert stop.value.value == "x"


def test_failed_task_raises_its_error_and_first_outcome_wins() -> None:
    t: CompletableTask[int] = CompletableTask()
    err = ValueError("boom")
    t.fail(err)
    t.complete(1)  # a late duplicate outcome changes nothing
    assert t.is_complete and t.is_failed
    assert t.exception() is err
    with pytest.raises(ValueError, match="boom"):
        t.result()


def test_when_all_keeps_input_order_whatever_the_completion_order() -> None:
    ts = _tasks(4)
    all_ = when_all(ts)
    for i in (3, 1, 0):
        ts[i].complete(i * 10)
        assert not all_.is_complete
    ts[2].complete(20)
    assert all_.result() == [0, 10, 20, 30]


def test_when_all_raises_first_failure_in_input_order_only_after_all_finished() -> None:
    ts = _tasks(3)
    all_ = when_all(ts)
    late, early = RuntimeError("second in input order"), KeyError("first in input order")
    ts[1].fail(late)
    assert not all_.is_complete, "a failure must not finish when_all while children run"
    ts[0].fail(early)
    assert not all_.is_complete
    ts[2].complete(None)
    assert all_.exception() is early


def test_when_all_of_completed_or_no_tasks_is_complete_at_once() -> None:
    assert when_all([]).result() == []
    ts = _tasks(2)
    ts[0].complete("a")
    ts[1].complete("b")
    assert when_all(ts).result() == ["a", "b"]


def test_when_any_returns_the_winning_task_not_its_result() -> None:
    ts = _tasks(3)
    any_ = when_any(ts)
    assert not any_.is_complete
    ts[2].complete("late but first")
    ts[0].complete("later")
    assert any_.result() is ts[2]


def test_when_any_winner_may_be_a_failed_task() -> None:
    ts = _tasks(2)
    any_ = when_any(ts)
    ts[1].fail(ValueError("x"))
    winner = any_.result()
    assert winner is ts[1]
    assert winner.is_failed  # when_any itself does not raise; the winner does


def test_when_any_with_an_already_completed_child() -> None:
    ts = _tasks(2)
    ts[1].complete(1)
    assert when_any(ts).result() is ts[1]


def test_when_any_needs_tasks() -> None:
    with pytest.raises(ValueError, match="at least one"):
        when_any([])


def test_composites_nest() -> None:
    ts = _tasks(3)
    inner = when_all(ts[:2])
    outer: Task[Any] = when_any([inner, ts[2]])
    ts[0].complete(1)
    assert not outer.is_complete
    ts[1].complete(2)
    assert outer.result() is inner
    assert inner.result() == [1, 2]
