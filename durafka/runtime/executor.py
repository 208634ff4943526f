"""The replay executor: ``(history, new events) -> (actions, completion)``, with no I/O.

An :class:`OrchestrationExecutor` drives one orchestrator coroutine with
``send()``. It is fed history first (:meth:`~OrchestrationExecutor.replay`),
during which every action the orchestrator takes must match the recorded one
with the same sequence id, and then new events (:meth:`~OrchestrationExecutor.step`),
during which new actions are collected and returned. A live executor can be
kept in a cache and stepped again, so replay only happens on a cache miss.

The processor appends ``[ORCHESTRATOR_STARTED, *incoming, *actions, completion]``
of every step to the instance's history, which is what makes the next replay
reproduce the same state.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from durafka.codec.payload import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_CUSTOM_STATUS_BYTES,
    adapter_for,
    decode_payload,
    encode_payload,
)
from durafka.entities import EntityId
from durafka.errors import (
    ActivityFailed,
    ActivityTimeoutError,
    EntityLockFailed,
    EntityOperationFailed,
    EventTimeoutError,
    FailureDetails,
    NonDeterminismError,
    OrchestrationUsageError,
    PayloadTooLargeError,
    SerializationError,
    SubOrchestrationFailed,
    TaskFailedError,
    UnknownFunctionError,
)
from durafka.ids import check_orchestration_id
from durafka.registry import Registry
from durafka.runtime.context import ContinueAsNew, OrchestrationContext
from durafka.runtime.history import ACTION_KINDS, EventKind, HistoryEvent, undone_events
from durafka.runtime.retry import RetryPolicy
from durafka.runtime.tasks import CompletableTask, Task

#: Frames in durafka's own code are left out of code locations.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

_DESCRIBE = {
    EventKind.TASK_SCHEDULED: "call_activity",
    EventKind.TIMER_CREATED: "create_timer",
    EventKind.SUB_ORCHESTRATION_CREATED: "call_sub_orchestrator",
    EventKind.EVENT_SENT: "send_event",
    EventKind.ENTITY_CALLED: "call_entity",
    EventKind.ENTITY_SIGNALED: "signal_entity",
    EventKind.LOCK_REQUESTED: "lock",
    EventKind.LOCK_RELEASED: "the end of the lock block of",
    EventKind.MARKER_RECORDED: "patched",
}


#: The call each completion kind answers.
_ANSWERS = {
    EventKind.TASK_COMPLETED: EventKind.TASK_SCHEDULED,
    EventKind.TASK_FAILED: EventKind.TASK_SCHEDULED,
    EventKind.TIMER_FIRED: EventKind.TIMER_CREATED,
    EventKind.SUB_ORCHESTRATION_COMPLETED: EventKind.SUB_ORCHESTRATION_CREATED,
    EventKind.SUB_ORCHESTRATION_FAILED: EventKind.SUB_ORCHESTRATION_CREATED,
    EventKind.ENTITY_RESPONSE: EventKind.ENTITY_CALLED,
    EventKind.LOCK_GRANTED: EventKind.LOCK_REQUESTED,
}


def _describe(e: HistoryEvent) -> str:
    what = _DESCRIBE.get(e.kind, e.kind.value)
    if e.kind is EventKind.EVENT_SENT:
        return f"{what}({e.instance_id!r}, {e.name!r})"
    if e.kind is EventKind.ENTITY_CALLED or e.kind is EventKind.ENTITY_SIGNALED:
        return f"{what}({e.instance_id!r}, {e.name!r})"
    if e.kind is EventKind.LOCK_REQUESTED or e.kind is EventKind.LOCK_RELEASED:
        ids = ", ".join(repr(i) for i in json.loads(e.payload or b"[]"))
        return f"{what}({ids})"
    if e.kind is EventKind.SUB_ORCHESTRATION_CREATED:
        return f"{what}({e.name!r}, instance_id={e.instance_id!r})"
    return f"{what}({e.name!r})" if e.name is not None else f"{what}()"


def _settle(task: CompletableTask[Any], payload: bytes | None, adapter: Any, what: str) -> None:
    """Complete ``task`` with the decoded payload, or fail it if the payload does not decode.

    A bad payload must surface where the orchestrator awaits it (and fail the
    instance if uncaught), never escape ``step()`` and stall the processor.
    """
    try:
        value = decode_payload(payload, adapter, what=what)
    except SerializationError as exc:
        task.fail(exc)
    else:
        task.complete(value)


@dataclass(slots=True)
class StepResult:
    """What one step of an orchestration produced.

    Attributes:
        actions: new action events (TASK_SCHEDULED, TIMER_CREATED, ...), in call order.
        completion: EXECUTION_COMPLETED / EXECUTION_FAILED / CONTINUED_AS_NEW, if the
            orchestrator finished in this step.
        custom_status: the custom status (JSON bytes) after the step.
        carried_events: buffered EVENT_RAISED events to replay into the next generation
            after ``continue_as_new(keep_unprocessed_events=True)``.
    """

    actions: list[HistoryEvent] = field(default_factory=list)
    completion: HistoryEvent | None = None
    custom_status: bytes | None = None
    carried_events: list[HistoryEvent] = field(default_factory=list)


class _Pending:
    """A task waiting for its completion event, and how to decode its result."""

    __slots__ = ("adapter", "kind", "name", "task")

    def __init__(
        self,
        task: CompletableTask[Any],
        kind: EventKind,
        name: str | None,
        adapter: TypeAdapter[Any] | None,
    ) -> None:
        self.task = task
        self.kind = kind
        self.name = name
        self.adapter = adapter


class _RetryingTask(CompletableTask[Any]):
    """An activity or sub-orchestration call that retries on durable timers."""

    __slots__ = ("activity", "attempt", "first_attempt_ms", "policy", "start_attempt")

    def __init__(
        self,
        policy: RetryPolicy,
        start_attempt: Callable[[], Task[Any]],
        now_ms: int,
        activity: str | None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.start_attempt = start_attempt
        self.first_attempt_ms = now_ms
        self.attempt = 0
        self.activity = activity


class OrchestrationExecutor:
    """Runs one orchestration instance's coroutine against its history.

    Example:
        >>> ex = OrchestrationExecutor(registry, "order-42", "process_order")
        >>> ex.replay(history)            # rebuild state, checking determinism
        >>> result = ex.step(new_events)  # new actions and possibly a completion
    """

    def __init__(
        self,
        registry: Registry,
        instance_id: str,
        name: str,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        generation: int = 0,
    ) -> None:
        self.registry = registry
        self.instance_id = instance_id
        # Sequence ids restart with each continue_as_new generation and each start of
        # the id; default child ids include both (see _start), so they never collide
        # with an earlier one's.
        self._generation = generation
        self._child_prefix = instance_id if generation == 0 else f"{instance_id}:g{generation}"
        self.name = name
        self.max_payload_bytes = max_payload_bytes
        self.is_replaying = False
        self.current_time_ms = 0
        self.is_complete = False
        #: Activities a retry policy scheduled again in live steps (the processor's
        #: metrics take and clear it; replays add nothing).
        self.retried: list[str] = []
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._waiting: Task[Any] | None = None
        self._next_seq = 0
        self._pending: dict[int, _Pending] = {}
        self._unmatched: dict[int, HistoryEvent] = {}
        self._new_actions: list[HistoryEvent] = []
        self._event_waiters: dict[
            str, deque[tuple[CompletableTask[Any], TypeAdapter[Any] | None]]
        ] = {}
        # Buffered events keep their arrival number: carried over in arrival order.
        self._event_buffer: dict[str, deque[tuple[int, HistoryEvent]]] = {}
        self._arrivals = 0
        self._diverged = False
        #: The first way the code diverged from the replayed history, if it did.
        self.divergence: NonDeterminismError | None = None
        self._completion: HistoryEvent | None = None
        self._carried: list[HistoryEvent] = []
        self._custom_status: bytes | None = None
        self._output_adapter: TypeAdapter[Any] | None = None
        # ctx.patched: markers in the replayed history (id -> seq); each id's answer.
        self._recorded_patches: dict[str, int] = {}
        self._patches: dict[str, bool] = {}
        # Entity ids of the lock being acquired or held (ctx.lock), sorted; None if none.
        self._lock: list[str] | None = None
        self._lock_granted = False

    # -- driving ---------------------------------------------------------------

    def replay(self, history: list[HistoryEvent]) -> None:
        """Re-run recorded history; actions must match what was recorded."""
        # ctx.patched needs to know, before the marker's place, whether history has one.
        self._recorded_patches = {
            e.name: e.seq
            for e in history
            if e.kind is EventKind.MARKER_RECORDED and e.name is not None
        }
        if any(e.kind is EventKind.EXECUTION_REWOUND for e in history):
            undone = undone_events(history)
            history = [e for i, e in enumerate(history) if i not in undone]
        self.is_replaying = True
        try:
            for event in history:
                if self.is_complete:
                    if self._diverged:
                        break
                    # Done on replay: the actions recorded after this point must still
                    # have been made, or code that now returns early would go unnoticed.
                    if event.kind in ACTION_KINDS:
                        self._apply(event)
                    continue
                self._apply(event)
        finally:
            self.is_replaying = False
        # Actions taken during replay that history did not record are new (e.g. the
        # last step's record was lost with a crash): they are emitted by the next step.
        self._new_actions = [self._unmatched[s] for s in sorted(self._unmatched)]
        self._unmatched.clear()

    def step(self, new_events: list[HistoryEvent]) -> StepResult:
        """Apply new events; return the actions taken and the completion, if any."""
        for event in new_events:
            if self.is_complete:
                break
            self._apply(event)
        actions, self._new_actions = self._new_actions, []
        actions.extend(self._unmatched[s] for s in sorted(self._unmatched))
        self._unmatched.clear()
        return StepResult(actions, self._completion, self._custom_status, self._carried)

    @property
    def completion(self) -> HistoryEvent | None:
        """How the code ended the execution (completed, failed, continued as new), if it did.

        Set by the code itself, live or during a replay; a completion that the
        replayed history recorded but the code did not reach leaves it None.
        """
        return self._completion

    @property
    def has_new_actions(self) -> bool:
        """Whether the replay took calls its history did not record (the next step emits them)."""
        return bool(self._new_actions)

    def pending_calls(self) -> dict[int, EventKind]:
        """The calls still waiting for their completion: sequence id -> the call's kind."""
        return {seq: p.kind for seq, p in self._pending.items()}

    @property
    def lock_requested(self) -> bool:
        """Whether the orchestrator is inside a ``ctx.lock`` block (requested or granted)."""
        return self._lock is not None

    @property
    def has_started(self) -> bool:
        """Whether EXECUTION_STARTED has been applied (the coroutine exists or failed)."""
        return self._coro is not None or self.is_complete

    def is_waiting_for(self, completion: HistoryEvent) -> bool:
        """Whether ``completion`` answers a call the orchestrator still waits for.

        Its sequence id must be pending *and* belong to a call of the kind it
        completes (a task result never completes a timer with the same sequence
        id). Anything else is a duplicate (a re-run activity, a fired timer of a
        finished wait) or stray, and is dropped before the engine sees it.
        """
        pending = self._pending.get(completion.seq)
        return pending is not None and _ANSWERS.get(completion.kind) is pending.kind

    # -- events ----------------------------------------------------------------

    def _apply(self, e: HistoryEvent) -> None:
        kind = e.kind
        try:
            if kind is EventKind.ORCHESTRATOR_STARTED:
                self.current_time_ms = e.timestamp
            elif kind is EventKind.EXECUTION_STARTED:
                self._start(e)
            elif kind is EventKind.TASK_COMPLETED or kind is EventKind.SUB_ORCHESTRATION_COMPLETED:
                p = self._pending.pop(e.seq, None)
                if p is not None:
                    _settle(p.task, e.payload, p.adapter, f"result of {p.name!r}")
            elif kind is EventKind.TASK_FAILED or kind is EventKind.SUB_ORCHESTRATION_FAILED:
                p = self._pending.pop(e.seq, None)
                if p is not None:
                    details = e.failure or FailureDetails("unknown", "no failure details")
                    err_cls: type[TaskFailedError] = (
                        ActivityFailed if kind is EventKind.TASK_FAILED else SubOrchestrationFailed
                    )
                    if err_cls is ActivityFailed and details.is_caused_by(ActivityTimeoutError):
                        err_cls = ActivityTimeoutError  # no heartbeat in time (the processor)
                    what = "activity" if kind is EventKind.TASK_FAILED else "sub-orchestration"
                    p.task.fail(
                        err_cls(
                            f"{what} {p.name!r} failed: {details.error_type}: {details.message}",
                            details,
                        )
                    )
            elif kind is EventKind.TIMER_FIRED or kind is EventKind.LOCK_GRANTED:
                p = self._pending.pop(e.seq, None)
                if p is not None:
                    if e.failure is None:
                        p.task.complete(None)
                    else:  # an entity could not take the lock request
                        details = e.failure
                        p.task.fail(
                            EntityLockFailed(
                                f"the lock could not be taken at entity {e.instance_id}: "
                                f"{details.error_type}: {details.message}",
                                details,
                            )
                        )
            elif kind is EventKind.ENTITY_RESPONSE:
                self._on_entity_response(e)
            elif kind is EventKind.EVENT_RAISED:
                self._on_event_raised(e)
            elif kind in ACTION_KINDS:
                self._match_recorded_action(e)
            elif (
                kind is EventKind.EXECUTION_COMPLETED
                or kind is EventKind.EXECUTION_FAILED
                or kind is EventKind.EXECUTION_TERMINATED
                or kind is EventKind.CONTINUED_AS_NEW
            ):
                self.is_complete = True
            # EXECUTION_SUSPENDED / RESUMED change nothing inside the orchestrator.
            self._resume()
        except NonDeterminismError as exc:
            self._fail(exc)
            # Nothing the diverged code did may leave the executor.
            self._diverged = True
            if self.divergence is None:
                self.divergence = exc
            self._unmatched.clear()
            self._new_actions.clear()

    def _start(self, e: HistoryEvent) -> None:
        if self._coro is not None:
            return  # a duplicate start is dropped by the processor; be safe anyway
        if e.execution_id is not None:
            # Histories started before execution ids keep their (replayed) child ids.
            execution = f"{self.instance_id}:{e.execution_id[:8]}"
            self._child_prefix = (
                execution if self._generation == 0 else f"{execution}:g{self._generation}"
            )
        if e.timestamp and not self.current_time_ms:
            self.current_time_ms = e.timestamp
        try:
            d = self.registry.orchestration_version(self.name, e.version)
        except UnknownFunctionError as exc:
            self._fail(exc)
            return
        self._output_adapter = d.output_adapter
        try:
            # Only the coroutine's frame holds the context: once the orchestration
            # returns, nothing ties the executor and the context into a cycle, so a
            # finished executor is freed without waiting for the garbage collector.
            args: tuple[Any, ...] = (OrchestrationContext(self),)
            if d.takes_input:
                args += (
                    decode_payload(e.payload, d.input_adapter, what=f"input of {self.name!r}"),
                )
            self._coro = d.fn(*args)
        except Exception as exc:
            self._fail(exc)
            return
        self._drive()

    def _on_event_raised(self, e: HistoryEvent) -> None:
        name = e.name or ""
        waiters = self._event_waiters.get(name)
        if waiters:
            task, adapter = waiters.popleft()
            _settle(task, e.payload, adapter, f"event {name!r}")
        else:
            self._arrivals += 1
            self._event_buffer.setdefault(name, deque()).append((self._arrivals, e))

    def _on_entity_response(self, e: HistoryEvent) -> None:
        p = self._pending.pop(e.seq, None)
        if p is None:
            return
        what = f"{p.name!r} on entity {e.instance_id}"
        if e.failure is not None:
            details = e.failure
            p.task.fail(
                EntityOperationFailed(
                    f"operation {what} failed: {details.error_type}: {details.message}", details
                )
            )
        else:
            _settle(p.task, e.payload, p.adapter, f"result of operation {what}")

    def _match_recorded_action(self, e: HistoryEvent) -> None:
        if not self.is_replaying:
            return  # a recorded action arriving as a new event has no meaning; ignore
        taken = self._unmatched.pop(e.seq, None)
        if taken is None:
            raise NonDeterminismError(
                f"non-deterministic orchestration {self.name!r} ({self.instance_id}): history "
                f"recorded {_describe(e)} as sequence #{e.seq}, but on replay the orchestrator "
                f"did not make that call at this point. Likely cause: the code changed while "
                f"the instance was running, or it branched on wall-clock time, randomness or I/O "
                f"outside ctx.",
                seq=e.seq,
                recorded=_describe(e),
                location=self.code_location(),
            )
        if (
            taken.kind is not e.kind
            or taken.name != e.name
            or taken.instance_id != e.instance_id
            or (e.kind is EventKind.LOCK_REQUESTED and taken.payload != e.payload)
        ):
            raise NonDeterminismError(
                f"non-deterministic orchestration {self.name!r} ({self.instance_id}): at "
                f"sequence #{e.seq} history recorded {_describe(e)} but the orchestrator now "
                f"called {_describe(taken)}. Likely cause: the code changed while the instance "
                f"was running; deploy changes under a new orchestration name or version.",
                seq=e.seq,
                recorded=_describe(e),
                taken=_describe(taken),
                location=self.code_location(),
            )

    def code_location(self) -> str | None:
        """``file:line in function`` where the orchestrator's code waits now.

        The innermost frame of the awaiting chain outside durafka (a helper
        coroutine the orchestrator awaits counts as its code); None when the
        orchestrator has returned or not started.
        """
        obj: Any = self._coro
        where: str | None = None
        while obj is not None:
            frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
            if frame is None:
                break
            if not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        return where

    # -- the coroutine -----------------------------------------------------------

    def _resume(self) -> None:
        while self._waiting is not None and self._waiting.is_complete and not self.is_complete:
            self._waiting = None
            self._drive()

    def _drive(self) -> None:
        coro = self._coro
        if coro is None:
            return
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            self._complete_with(stop.value)
            return
        except ContinueAsNew as can:
            self._continue_as_new(can)
            return
        except NonDeterminismError:
            raise
        except RuntimeError as exc:
            # asyncio.sleep(n), asyncio.create_task(...) and friends need a running loop.
            if "no running event loop" not in str(exc):
                self._fail(exc)
                return
            usage = self._usage_error(f"used asyncio ({exc})")
            usage.__cause__ = exc
            self._fail(usage)
            return
        except Exception as exc:
            self._fail(exc)
            return
        if not isinstance(yielded, Task):
            coro.close()
            what = (
                "awaited a bare yield (None), as asyncio.sleep(0) does"
                if yielded is None
                else f"awaited {yielded!r}"
            )
            self._fail(self._usage_error(what))
            return
        self._waiting = yielded

    def _usage_error(self, what: str) -> OrchestrationUsageError:
        return OrchestrationUsageError(
            f"orchestration {self.name!r} {what}, which is not a durafka task. "
            "Orchestrators may only await ctx calls (activities, timers, events, "
            "sub-orchestrations, when_all/when_any); use ctx.sleep() instead of "
            "asyncio.sleep() and do I/O in activities."
        )

    def _complete_with(self, value: Any) -> None:
        try:
            payload = encode_payload(
                value,
                self._output_adapter,
                max_bytes=self.max_payload_bytes,
                what=f"output of {self.name!r}",
            )
        except Exception as exc:
            self._fail(exc)
            return
        self._finish(
            HistoryEvent(EventKind.EXECUTION_COMPLETED, self.current_time_ms, payload=payload)
        )

    def _continue_as_new(self, can: ContinueAsNew) -> None:
        try:
            payload = encode_payload(
                can.new_input,
                None,
                max_bytes=self.max_payload_bytes,
                what=f"continue_as_new input of {self.name!r}",
            )
        except Exception as exc:
            self._fail(exc)
            return
        if can.keep_unprocessed_events:
            buffered = sorted(item for q in self._event_buffer.values() for item in q)
            self._carried = [e for _, e in buffered]
        self._finish(
            HistoryEvent(EventKind.CONTINUED_AS_NEW, self.current_time_ms, payload=payload)
        )

    def _fail(self, exc: BaseException) -> None:
        if self._coro is not None:
            # A finally block that awaits (or raises) must not hide the real failure.
            with contextlib.suppress(Exception):
                self._coro.close()
        details = FailureDetails.from_exception(exc)
        if isinstance(exc, TaskFailedError) and exc.details.stack_trace:
            # The task's own traceback (from the worker or the child) is what explains it.
            details = replace(
                details,
                stack_trace=f"{details.stack_trace}\nCaused by {exc.details.error_type}: "
                f"{exc.details.message}\n{exc.details.stack_trace}",
            ).bounded()
        self._finish(
            HistoryEvent(EventKind.EXECUTION_FAILED, self.current_time_ms, failure=details)
        )

    def _finish(self, event: HistoryEvent) -> None:
        # Actions taken in the finishing step stay: they are emitted with the completion
        # (live) or matched against the history that recorded them (replay).
        self.is_complete = True
        self._waiting = None
        self._completion = event

    # -- actions (called through the context) ----------------------------------

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _record(
        self, event: HistoryEvent, task: CompletableTask[Any], adapter: TypeAdapter[Any] | None
    ) -> None:
        self._unmatched[event.seq] = event
        self._pending[event.seq] = _Pending(task, event.kind, event.name, adapter)

    def schedule_activity(
        self,
        activity: Callable[..., Any] | str,
        input: Any,
        retry: RetryPolicy | None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
    ) -> Task[Any]:
        name = self.registry.name_of(activity, self.registry.activities)
        d = self.registry.activities.get(name)
        out_adapter = d.output_adapter if d is not None else None
        in_adapter = d.input_adapter if d is not None else None
        payload = encode_payload(
            input, in_adapter, max_bytes=self.max_payload_bytes, what=f"input of activity {name!r}"
        )

        heartbeat_ms = _positive_ms(heartbeat_timeout, "heartbeat_timeout")
        timeout_ms = None if timeout is None else int(timeout.total_seconds() * 1000)

        def attempt() -> Task[Any]:
            task: CompletableTask[Any] = CompletableTask()
            e = HistoryEvent(
                EventKind.TASK_SCHEDULED,
                self.current_time_ms,
                seq=self._take_seq(),
                name=name,
                payload=payload,
                # The attempt's deadline: the worker neither starts it nor waits for it later.
                fire_at=None if timeout_ms is None else self.current_time_ms + timeout_ms,
                heartbeat_timeout_ms=heartbeat_ms,
            )
            self._record(e, task, out_adapter)
            if timeout is not None:
                self._arm_timeout(task, e, timeout)
            return task

        return attempt() if retry is None else self._with_retry(retry, attempt, name)

    def _arm_timeout(
        self, task: CompletableTask[Any], scheduled: HistoryEvent, timeout: timedelta
    ) -> None:
        """Race ``task`` against a durable timer; the loser is cancelled (its event dropped)."""
        timer = self.create_timer(self.current_time_ms + int(timeout.total_seconds() * 1000))
        assert isinstance(timer, CompletableTask)

        def on_timer(_t: Task[Any]) -> None:
            if task.is_complete or timer.is_failed:
                return
            self._pending.pop(scheduled.seq, None)  # a late result is now a duplicate
            details = FailureDetails(
                "durafka.errors.ActivityTimeoutError",
                f"activity {scheduled.name!r} did not complete within {timeout}",
            )
            task.fail(
                ActivityTimeoutError(
                    f"activity {scheduled.name!r} timed out after {timeout}", details
                )
            )

        def on_task(_t: Task[Any]) -> None:
            if not timer.is_complete:
                timer.cancel()

        _Callback(timer, on_timer)
        _Callback(task, on_task)

    def schedule_sub_orchestration(
        self,
        orchestration: Callable[..., Any] | str,
        input: Any,
        instance_id: str | None,
        retry: RetryPolicy | None,
    ) -> Task[Any]:
        name = self.registry.name_of(orchestration, self.registry.orchestrations)
        if self._lock is not None:
            # The child would queue behind its parent's lock on any locked entity it
            # touched, and the parent waits for the child: a deadlock (the same rule
            # as Durable Functions' critical sections).
            raise OrchestrationUsageError(
                f"orchestration {self.name!r} called sub-orchestration {name!r} inside a "
                f"ctx.lock block (locked: {', '.join(self._lock)}); call it before or after "
                "the block"
            )
        d = self.registry.orchestrations.get(name)
        payload = encode_payload(
            input,
            d.input_adapter if d else None,
            max_bytes=self.max_payload_bytes,
            what=f"input of sub-orchestration {name!r}",
        )
        out_adapter = d.output_adapter if d else None
        if instance_id is not None:
            check_orchestration_id(instance_id)

        def attempt() -> Task[Any]:
            task: CompletableTask[Any] = CompletableTask()
            seq = self._take_seq()
            # A default id is checked too: a parent id near the length limit makes it too long.
            child = instance_id or check_orchestration_id(f"{self._child_prefix}:{seq}")
            e = HistoryEvent(
                EventKind.SUB_ORCHESTRATION_CREATED,
                self.current_time_ms,
                seq=seq,
                name=name,
                payload=payload,
                instance_id=child,
            )
            self._record(e, task, out_adapter)
            return task

        return attempt() if retry is None else self._with_retry(retry, attempt)

    def create_timer(self, due_ms: int) -> CompletableTask[None]:
        task: CompletableTask[None] = CompletableTask()
        seq = self._next_seq
        task.on_cancel = lambda: self._cancel_pending(seq)
        e = HistoryEvent(
            EventKind.TIMER_CREATED, self.current_time_ms, seq=self._take_seq(), fire_at=due_ms
        )
        self._record(e, task, None)
        return task

    def _cancel_pending(self, seq: int) -> None:
        self._pending.pop(seq, None)

    def wait_for_event(self, name: str, tp: Any, timeout: timedelta | None = None) -> Task[Any]:
        task: CompletableTask[Any] = CompletableTask()
        adapter = adapter_for(tp) if tp is not None else None
        buffered = self._event_buffer.get(name)
        if buffered:
            _, e = buffered.popleft()
            _settle(task, e.payload, adapter, f"event {name!r}")
            return task
        waiters = self._event_waiters.setdefault(name, deque())
        entry = (task, adapter)
        waiters.append(entry)
        if timeout is not None:
            timer = self.create_timer(self.current_time_ms + int(timeout.total_seconds() * 1000))

            def on_timer(_t: Task[Any]) -> None:
                if task.is_complete or timer.is_failed:
                    return
                waiters.remove(entry)  # a later event is buffered for the next wait
                task.fail(EventTimeoutError(f"no event {name!r} arrived within {timeout}"))

            def on_event(_t: Task[Any]) -> None:
                if not timer.is_complete:
                    timer.cancel()

            _Callback(timer, on_timer)
            _Callback(task, on_event)
        return task

    def send_event(self, instance_id: str, name: str, data: Any) -> None:
        check_orchestration_id(instance_id)
        payload = encode_payload(
            data, None, max_bytes=self.max_payload_bytes, what=f"data of event {name!r}"
        )
        e = HistoryEvent(
            EventKind.EVENT_SENT,
            self.current_time_ms,
            seq=self._take_seq(),
            name=name,
            payload=payload,
            instance_id=instance_id,
        )
        self._unmatched[e.seq] = e

    def call_entity(self, entity_id: EntityId, operation: str, input: Any) -> Task[Any]:
        eid = self._entity_target(entity_id, "call_entity")
        if self._lock is not None and self._lock_granted and eid not in self._lock:
            # Waiting on an entity outside the lock while holding others is how
            # two critical sections deadlock each other.
            raise OrchestrationUsageError(
                f"orchestration {self.name!r} called entity {eid} inside a ctx.lock block "
                f"that does not lock it (locked: {', '.join(self._lock)}); lock it too, or "
                "call it outside the block (signal_entity is allowed)"
            )
        d = self.registry.entities.get(entity_id.name)
        op = d.operation(operation) if d is not None else None
        payload = self._entity_input(input, op.input_adapter if op else None, operation, eid)
        task: CompletableTask[Any] = CompletableTask()
        e = HistoryEvent(
            EventKind.ENTITY_CALLED,
            self.current_time_ms,
            seq=self._take_seq(),
            name=operation,
            payload=payload,
            instance_id=eid,
        )
        self._record(e, task, op.output_adapter if op else None)
        return task

    def signal_entity(self, entity_id: EntityId, operation: str, input: Any) -> None:
        eid = self._entity_target(entity_id, "signal_entity")
        d = self.registry.entities.get(entity_id.name)
        op = d.operation(operation) if d is not None else None
        payload = self._entity_input(input, op.input_adapter if op else None, operation, eid)
        e = HistoryEvent(
            EventKind.ENTITY_SIGNALED,
            self.current_time_ms,
            seq=self._take_seq(),
            name=operation,
            payload=payload,
            instance_id=eid,
        )
        self._unmatched[e.seq] = e

    def acquire_lock(self, entity_ids: tuple[EntityId, ...]) -> Task[None]:
        if self._lock is not None:
            raise OrchestrationUsageError(
                f"orchestration {self.name!r} entered ctx.lock while already locking "
                f"{', '.join(self._lock)}; lock every entity in one ctx.lock(...) call "
                "(nested locks could deadlock)"
            )
        if not entity_ids:
            raise ValueError("ctx.lock needs at least one entity id")
        ids = sorted({self._entity_target(i, "lock") for i in entity_ids})
        task: CompletableTask[None] = CompletableTask()
        e = HistoryEvent(
            EventKind.LOCK_REQUESTED,
            self.current_time_ms,
            seq=self._take_seq(),
            payload=json.dumps(ids).encode(),
        )
        self._record(e, task, None)
        self._lock = ids
        self._lock_granted = False
        _Callback(task, self._on_lock_answered)
        return task

    def _on_lock_answered(self, task: Task[Any]) -> None:
        if task.is_failed:
            # The entities before the one that failed have locked themselves for this
            # request: release them (``async with`` does not exit a failed enter).
            self.release_lock()
        else:
            self._lock_granted = True

    def release_lock(self) -> None:
        ids = self._lock
        if ids is None:
            return
        self._lock = None
        self._lock_granted = False
        e = HistoryEvent(
            EventKind.LOCK_RELEASED,
            self.current_time_ms,
            seq=self._take_seq(),
            payload=json.dumps(ids).encode(),
        )
        self._unmatched[e.seq] = e

    @property
    def locked_entities(self) -> list[str]:
        """The ids of the entities locked by the current ``ctx.lock`` block (granted)."""
        return list(self._lock) if self._lock is not None and self._lock_granted else []

    @staticmethod
    def _entity_target(entity_id: EntityId, what: str) -> str:
        if not isinstance(entity_id, EntityId):
            raise TypeError(f"{what} needs a durafka.EntityId, got {entity_id!r}")
        return str(entity_id)

    def _entity_input(
        self, input: Any, adapter: TypeAdapter[Any] | None, operation: str, eid: str
    ) -> bytes | None:
        if input is None:
            return None
        return encode_payload(
            input,
            adapter,
            max_bytes=self.max_payload_bytes,
            what=f"input of {operation!r} for entity {eid}",
        )

    def patched(self, change_id: str) -> bool:
        """Temporal's ``patched``: whether this execution takes the changed code path.

        True for new code (a live step records a ``MARKER_RECORDED`` the first time),
        and for a replay whose history recorded the marker; False for a replay of a
        history without it — and then for the rest of the execution, live steps
        included, so code after it stays consistent with the branch it took.
        """
        answer = self._patches.get(change_id)
        if answer is not None:
            return answer
        answer = not self.is_replaying or change_id in self._recorded_patches
        if answer:
            # During replay a marker recorded elsewhere mismatches: the patch moved.
            self._record_marker(change_id)
        self._patches[change_id] = answer
        return answer

    def deprecate_patch(self, change_id: str) -> None:
        """Temporal's ``deprecate_patch``: the patched branch is the only one left.

        Records nothing; consumes the marker a replayed history has at this point,
        so histories written with or without ``patched(change_id)`` both replay.
        """
        if change_id in self._patches:
            return
        self._patches[change_id] = True
        if self.is_replaying and self._recorded_patches.get(change_id) == self._next_seq:
            self._record_marker(change_id)

    def _record_marker(self, change_id: str) -> None:
        e = HistoryEvent(
            EventKind.MARKER_RECORDED,
            self.current_time_ms,
            seq=self._take_seq(),
            name=change_id,
        )
        self._unmatched[e.seq] = e

    def set_custom_status(self, value: Any) -> None:
        data = encode_payload(value, None, max_bytes=self.max_payload_bytes, what="custom status")
        if len(data) > MAX_CUSTOM_STATUS_BYTES:
            raise PayloadTooLargeError(
                f"the custom status is {len(data):,} bytes, over its limit of "
                f"{MAX_CUSTOM_STATUS_BYTES:,} bytes (it travels in every status record); "
                "publish progress, not data"
            )
        self._custom_status = data

    def _with_retry(
        self,
        policy: RetryPolicy,
        start_attempt: Callable[[], Task[Any]],
        activity: str | None = None,
    ) -> Task[Any]:
        outer = _RetryingTask(policy, start_attempt, self.current_time_ms, activity)
        self._next_attempt(outer)
        return outer

    def _next_attempt(self, outer: _RetryingTask) -> None:
        outer.attempt += 1
        if outer.attempt > 1 and outer.activity is not None and not self.is_replaying:
            self.retried.append(outer.activity)
        inner = outer.start_attempt()
        inner_done = _Callback(inner, lambda t: self._on_attempt_done(outer, t))
        del inner_done  # the callback is registered on the task; nothing else to keep

    def _on_attempt_done(self, outer: _RetryingTask, inner: Task[Any]) -> None:
        exc = inner.exception()
        if exc is None:
            outer.complete(inner.result())
            return
        details = getattr(exc, "details", None)
        policy = outer.policy
        elapsed_ms = self.current_time_ms - outer.first_attempt_ms
        delay = policy.delay_before(outer.attempt + 1)
        give_up = (
            outer.attempt >= policy.max_attempts
            or (details is not None and not policy.is_retryable(details))
            or (
                policy.total_timeout is not None
                and elapsed_ms + delay.total_seconds() * 1000
                > policy.total_timeout.total_seconds() * 1000
            )
        )
        if give_up:
            outer.fail(exc)
            return
        timer = self.create_timer(self.current_time_ms + int(delay.total_seconds() * 1000))
        _Callback(timer, lambda _t: self._next_attempt(outer))


def _positive_ms(value: timedelta | None, what: str) -> int | None:
    """``value`` in whole milliseconds (at least 1); None stays None."""
    if value is None:
        return None
    if value <= timedelta(0):
        raise ValueError(f"{what} must be positive, got {value}")
    return max(1, int(value.total_seconds() * 1000))


class _Callback:
    """Runs ``fn(task)`` when ``task`` completes (a one-child composite)."""

    __slots__ = ("fn",)

    def __init__(self, task: Task[Any], fn: Callable[[Task[Any]], None]) -> None:
        self.fn = fn
        if task.is_complete:
            fn(task)
        else:
            task.add_listener(self)

    def on_child_completed(self, child: Task[Any]) -> None:
        self.fn(child)
