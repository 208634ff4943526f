"""Durable tasks: the only things an orchestrator may ``await``.

A task is created when the orchestrator *calls* a ``ctx`` method (that is when
it takes its sequence id), and completed by the executor when the matching
history event is applied. Awaiting a completed task returns at once; awaiting
a pending one suspends the orchestrator's coroutine until the executor resumes
it with ``send()`` / ``throw()``. No asyncio event loop is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class TaskListener(Protocol):
    """Told when a task it listens to completes (composite tasks, the executor's callbacks)."""

    def on_child_completed(self, child: Task[Any]) -> None: ...


class Task(Generic[T]):
    """A durable unit of work whose result the orchestrator can await.

    Example:
        >>> async def orchestrator(ctx, order):
        ...     payment = ctx.call_activity(charge, order)    # scheduled now
        ...     receipt = await payment                        # suspends until done
    """

    __slots__ = ("_exception", "_is_complete", "_parents", "_result")

    def __init__(self) -> None:
        self._is_complete = False
        self._result: Any = None
        self._exception: BaseException | None = None
        self._parents: list[TaskListener] = []

    @property
    def is_complete(self) -> bool:
        """Whether the task has a result or an error."""
        return self._is_complete

    @property
    def is_failed(self) -> bool:
        """Whether the task completed with an error."""
        return self._exception is not None

    def result(self) -> T:
        """The task's result; raises its error if it failed, ``RuntimeError`` if pending."""
        if not self._is_complete:
            raise RuntimeError("the task is not complete yet; await it first")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def exception(self) -> BaseException | None:
        """The error the task failed with, if any."""
        return self._exception

    def add_listener(self, listener: TaskListener) -> None:
        """Call ``listener.on_child_completed(self)`` when this task completes."""
        self._parents.append(listener)

    def complete(self, result: T) -> None:
        """Mark the task successful (called by the executor)."""
        if self._is_complete:
            return
        self._is_complete = True
        self._result = result
        self._notify()

    def fail(self, exception: BaseException) -> None:
        """Mark the task failed (called by the executor)."""
        if self._is_complete:
            return
        self._is_complete = True
        self._exception = exception
        self._notify()

    def _notify(self) -> None:
        for parent in self._parents:
            parent.on_child_completed(self)

    def __await__(self) -> Generator[Task[Any], Any, T]:
        if not self._is_complete:
            yield self
        return self.result()


class CompletableTask(Task[T]):
    """A task completed by one history event (activity, timer, sub-orchestration, event)."""

    __slots__ = ("on_cancel",)

    def __init__(self) -> None:
        super().__init__()
        self.on_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        """Stop waiting for this task (e.g. the losing timer of ``when_any``).

        Its completion, should it still arrive, is dropped. Awaiting a cancelled
        task raises :class:`TaskCancelledError`.
        """
        if self._is_complete:
            return
        if self.on_cancel is not None:
            self.on_cancel()
        self.fail(TaskCancelledError("the task was cancelled"))


class TaskCancelledError(Exception):
    """Raised when awaiting a task that was cancelled."""


class CompositeTask(Task[T]):
    """A task that completes from its children (``when_all`` / ``when_any``)."""

    __slots__ = ("children",)

    def __init__(self, children: Sequence[Task[Any]]) -> None:
        super().__init__()
        self.children = list(children)
        for child in self.children:
            child.add_listener(self)

    def on_child_completed(self, child: Task[Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class WhenAllTask(CompositeTask[list[T]]):
    """Completes when every child has; the results keep the input order.

    If a child fails, the first failure (in input order) is raised after all
    children have finished, so no result arrives for an orchestrator that has
    moved on.
    """

    __slots__ = ("_remaining",)

    def __init__(self, children: Sequence[Task[T]]) -> None:
        super().__init__(children)
        self._remaining = sum(1 for c in self.children if not c.is_complete)
        if self._remaining == 0:
            self._finish()

    def on_child_completed(self, child: Task[Any]) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self._finish()

    def _finish(self) -> None:
        for child in self.children:
            if child.is_failed:
                self.fail(child.exception())  # type: ignore[arg-type]
                return
        self.complete([c.result() for c in self.children])


class WhenAnyTask(CompositeTask[Task[Any]]):
    """Completes with the first child to complete (the winning task, not its result)."""

    __slots__ = ()

    def __init__(self, children: Sequence[Task[Any]]) -> None:
        super().__init__(children)
        for child in self.children:
            if child.is_complete:
                self.complete(child)
                break

    def on_child_completed(self, child: Task[Any]) -> None:
        self.complete(child)


def when_all(tasks: Sequence[Task[T]]) -> WhenAllTask[T]:
    """A task completing with the list of all results, in the order given.

    Example:
        >>> results = await when_all([ctx.call_activity(work, i) for i in range(10)])
    """
    return WhenAllTask(tasks)


def when_any(tasks: Sequence[Task[Any]]) -> WhenAnyTask:
    """A task completing with the first of ``tasks`` to complete.

    Example:
        >>> winner = await when_any([approval, timeout])
        >>> if winner is timeout: ...
    """
    if not tasks:
        raise ValueError("when_any needs at least one task")
    return WhenAnyTask(tasks)
