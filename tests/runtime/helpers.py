"""A tiny history builder and a step runner that appends history like the processor does.

The processor appends ``[ORCHESTRATOR_STARTED(ts), *incoming, *actions, completion]``
of every step to an instance's history; on a cache miss it builds a fresh executor,
``replay(history)`` and then ``step(new)``. :class:`Run` does the same with a live
executor and, when ``check_replay`` is on, checks at every step that the cache-miss
path produces exactly what the live executor did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from durafka.codec.payload import encode_payload
from durafka.errors import FailureDetails
from durafka.registry import Registry
from durafka.runtime.executor import OrchestrationExecutor, StepResult
from durafka.runtime.history import EventKind, HistoryEvent

#: The time of the first step, ms since the epoch (2024-01-01T00:00:00Z).
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
#: How far the clock moves between two steps unless a step says otherwise.
STEP_MS = 1000


def _json(value: Any) -> bytes:
    return encode_payload(value)


def orchestrator_started(ts: int) -> HistoryEvent:
    """The ORCHESTRATOR_STARTED event opening a step at ``ts`` (ms)."""
    return HistoryEvent(EventKind.ORCHESTRATOR_STARTED, ts)


def started(name: str, input: Any = None, *, ts: int = T0) -> HistoryEvent:
    """EXECUTION_STARTED of orchestration ``name`` with ``input``."""
    return HistoryEvent(EventKind.EXECUTION_STARTED, ts, name=name, payload=_json(input))


def completed(seq: int, value: Any = None, *, attempt: int = 1, ts: int = T0) -> HistoryEvent:
    """TASK_COMPLETED of the activity call ``seq`` with result ``value``."""
    return HistoryEvent(
        EventKind.TASK_COMPLETED, ts, seq=seq, payload=_json(value), attempt=attempt
    )


def details_of(exc: BaseException) -> FailureDetails:
    """The failure details a worker would report for ``exc`` (with a real traceback)."""
    try:
        raise exc
    except BaseException as raised:
        return FailureDetails.from_exception(raised)


def failed(
    seq: int, exc: BaseException | FailureDetails, *, attempt: int = 1, ts: int = T0
) -> HistoryEvent:
    """TASK_FAILED of the activity call ``seq``."""
    details = exc if isinstance(exc, FailureDetails) else details_of(exc)
    return HistoryEvent(EventKind.TASK_FAILED, ts, seq=seq, failure=details, attempt=attempt)


def timer_fired(seq: int, fire_at: int, *, ts: int = T0) -> HistoryEvent:
    """TIMER_FIRED of the timer ``seq`` scheduled for ``fire_at`` (ms)."""
    return HistoryEvent(EventKind.TIMER_FIRED, ts, seq=seq, fire_at=fire_at)


def event_raised(name: str, data: Any = None, *, ts: int = T0) -> HistoryEvent:
    """EVENT_RAISED ``name`` carrying ``data``."""
    return HistoryEvent(EventKind.EVENT_RAISED, ts, name=name, payload=_json(data))


def sub_completed(seq: int, value: Any = None, *, ts: int = T0) -> HistoryEvent:
    """SUB_ORCHESTRATION_COMPLETED of the child started at ``seq``."""
    return HistoryEvent(EventKind.SUB_ORCHESTRATION_COMPLETED, ts, seq=seq, payload=_json(value))


def sub_failed(seq: int, exc: BaseException | FailureDetails, *, ts: int = T0) -> HistoryEvent:
    """SUB_ORCHESTRATION_FAILED of the child started at ``seq``."""
    details = exc if isinstance(exc, FailureDetails) else details_of(exc)
    return HistoryEvent(EventKind.SUB_ORCHESTRATION_FAILED, ts, seq=seq, failure=details)


def scheduled(seq: int, name: str, input: Any = None, *, ts: int = T0) -> HistoryEvent:
    """TASK_SCHEDULED of activity ``name`` at ``seq`` (for hand-written histories)."""
    return HistoryEvent(EventKind.TASK_SCHEDULED, ts, seq=seq, name=name, payload=_json(input))


def timer_created(seq: int, fire_at: int, *, ts: int = T0) -> HistoryEvent:
    """TIMER_CREATED at ``seq`` (for hand-written histories)."""
    return HistoryEvent(EventKind.TIMER_CREATED, ts, seq=seq, fire_at=fire_at)


def registry_with(
    *fns: Callable[..., Any], activities: Iterable[Callable[..., Any]] = ()
) -> Registry:
    """A registry with the given orchestrations and activities."""
    reg = Registry()
    for fn in fns:
        reg.add_orchestration(fn)
    for act in activities:
        reg.add_activity(act)
    return reg


def replay_fresh(
    registry: Registry, instance_id: str, name: str, history: list[HistoryEvent]
) -> OrchestrationExecutor:
    """A new executor with ``history`` replayed into it (the processor's cache-miss path)."""
    ex = OrchestrationExecutor(registry, instance_id, name)
    ex.replay(list(history))
    return ex


class ReplayMismatch(AssertionError):
    """The cache-miss path (fresh executor + replay) disagreed with the live executor."""


class Run:
    """Steps one instance the way the processor does, recording its history.

    Attributes:
        history: everything appended so far.
        results: the result of every step.
        steps: per step, the history length before it, its new events and its result.
        executor: the live (cached) executor.
    """

    def __init__(
        self,
        registry: Registry,
        name: str,
        *,
        instance_id: str = "inst-1",
        check_replay: bool = True,
        start_ms: int = T0,
    ) -> None:
        self.registry = registry
        self.name = name
        self.instance_id = instance_id
        self.check_replay = check_replay
        self.next_ms = start_ms
        self.history: list[HistoryEvent] = []
        self.results: list[StepResult] = []
        self.steps: list[tuple[int, list[HistoryEvent], StepResult]] = []
        self.executor = OrchestrationExecutor(registry, instance_id, name)

    @property
    def last(self) -> StepResult:
        """The result of the latest step."""
        return self.results[-1]

    def start(self, input: Any = None, *, at: int | None = None) -> StepResult:
        """Step with EXECUTION_STARTED."""
        return self.step(started(self.name, input, ts=self.next_ms if at is None else at), at=at)

    def step(self, *incoming: HistoryEvent, at: int | None = None) -> StepResult:
        """Run one step at ``at`` ms (default: one second after the previous step)."""
        assert not self.results or self.last.completion is None, "the instance already finished"
        ts = self.next_ms if at is None else at
        self.next_ms = ts + STEP_MS
        new = [orchestrator_started(ts), *incoming]
        if self.check_replay:
            # The cache-miss path must produce exactly what the live executor will.
            fresh = replay_fresh(self.registry, self.instance_id, self.name, self.history)
            expected = fresh.step(list(new))
        result = self.executor.step(list(new))
        self.results.append(result)
        self.steps.append((len(self.history), new, result))
        self.history.extend(new)
        self.history.extend(result.actions)
        if result.completion is not None:
            self.history.append(result.completion)
        if self.check_replay:
            if expected != result:
                raise ReplayMismatch(f"replay+step gave {expected!r}\nlive step gave {result!r}")
            # A fresh replay of the whole history has nothing new to do.
            after = replay_fresh(self.registry, self.instance_id, self.name, self.history).step([])
            if (
                after.actions
                or after.completion != result.completion
                or after.custom_status != result.custom_status
            ):
                raise ReplayMismatch(
                    f"replaying the full history gave {after!r}, live gave {result!r}"
                )
        return result

    def actions(self, kind: EventKind | None = None) -> list[HistoryEvent]:
        """The actions of the latest step (of one kind if given)."""
        return [a for a in self.last.actions if kind is None or a.kind is kind]


def run_steps(
    registry: Registry,
    name: str,
    input: Any,
    *steps: Iterable[HistoryEvent],
    instance_id: str = "inst-1",
    check_replay: bool = True,
) -> Run:
    """Start ``name`` with ``input`` and apply each of ``steps`` (a list of incoming events)."""
    run = Run(registry, name, instance_id=instance_id, check_replay=check_replay)
    run.start(input)
    for incoming in steps:
        run.step(*incoming)
    return run
