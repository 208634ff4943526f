"""The orchestration context: the API an orchestrator uses (``ctx``).

Every method that starts work takes the next sequence id *when it is called*
and records an action; replay checks that the same calls happen in the same
order. Time, ids and randomness come from history, so an orchestrator that
only uses ``ctx`` is deterministic.
"""

from __future__ import annotations

import hashlib
import logging
import random as _random
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

from durafka.runtime.retry import RetryPolicy
from durafka.runtime.tasks import (
    CompletableTask,
    Task,
    WhenAllTask,
    WhenAnyTask,
    when_all,
    when_any,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from types import TracebackType

    from durafka.entities import EntityId

    # A cycle for the type checker only: the executor drives this context, and the
    # context records the orchestrator's calls into that executor (one unit, two files).
    from durafka.runtime.executor import OrchestrationExecutor

T = TypeVar("T")

_UUID_NAMESPACE = uuid.UUID("6f1f5a52-9a43-4c1e-9d1e-7f0f6a7a1b2c")


class ContinueAsNew(BaseException):  # a control-flow signal, hence no "Error" suffix
    """Raised by :meth:`OrchestrationContext.continue_as_new`; never catch it.

    It derives from ``BaseException`` so that an orchestrator's ``except Exception``
    cannot swallow it.
    """

    def __init__(self, new_input: Any, keep_unprocessed_events: bool) -> None:
        super().__init__("continue_as_new")
        self.new_input = new_input
        self.keep_unprocessed_events = keep_unprocessed_events


class _ReplaySafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that stays silent while the orchestrator replays history."""

    def __init__(self, logger: logging.Logger, ctx: OrchestrationContext) -> None:
        super().__init__(logger, {})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:  # logging's own camelCase name
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self._ctx.instance_id}] {msg}", kwargs


class EntityLock:
    """The critical section of :meth:`OrchestrationContext.lock` (an async context manager).

    Entering sends one lock request that visits the entities in id order and
    waits until all of them are locked; leaving (normally, by an exception, or
    by ``continue_as_new``) releases them all.
    """

    __slots__ = ("_entities", "_ex")

    def __init__(self, executor: OrchestrationExecutor, entities: tuple[EntityId, ...]) -> None:
        self._ex = executor
        self._entities = entities

    async def __aenter__(self) -> None:
        await self._ex.acquire_lock(self._entities)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ex.release_lock()


class OrchestrationContext:
    """What an orchestrator may do: call activities, wait, branch, all durably.

    Example:
        >>> @app.orchestration
        ... async def hello_world(ctx: durafka.OrchestrationContext, name: str) -> str:
        ...     return await ctx.call_activity(say_hello, name)
    """

    def __init__(self, executor: OrchestrationExecutor) -> None:
        self._ex = executor
        self._uuid_counter = 0
        self._random: _random.Random | None = None
        self._logger: _ReplaySafeLogger | None = None

    # -- facts -----------------------------------------------------------------

    @property
    def instance_id(self) -> str:
        """The id of this orchestration instance."""
        return self._ex.instance_id

    @property
    def name(self) -> str:
        """The registered name of this orchestration."""
        return self._ex.name

    @property
    def is_replaying(self) -> bool:
        """True while the orchestrator re-runs recorded history (side effects must wait)."""
        return self._ex.is_replaying

    @property
    def logger(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        """A logger that is silent while replaying (``durafka.orchestration``)."""
        if self._logger is None:
            self._logger = _ReplaySafeLogger(logging.getLogger("durafka.orchestration"), self)
        return self._logger

    def now(self) -> datetime:
        """The current time of this step, from history (UTC): the same on every replay."""
        return datetime.fromtimestamp(self._ex.current_time_ms / 1000, tz=UTC)

    def new_uuid(self) -> uuid.UUID:
        """A UUID that is the same on every replay of this point of the orchestration."""
        self._uuid_counter += 1
        return uuid.uuid5(
            _UUID_NAMESPACE, f"{self.instance_id}/{self._ex.current_time_ms}/{self._uuid_counter}"
        )

    def random(self) -> _random.Random:
        """A ``random.Random`` seeded from the instance id: deterministic across replays."""
        if self._random is None:
            seed = int.from_bytes(hashlib.sha256(self.instance_id.encode()).digest()[:8], "big")
            self._random = _random.Random(seed)
        return self._random

    def set_custom_status(self, value: Any) -> None:
        """Publish a JSON-serialisable value in the instance's status (e.g. progress).

        Raises:
            PayloadTooLargeError: its JSON is over
                :data:`~durafka.codec.payload.MAX_CUSTOM_STATUS_BYTES` (64 KiB) or
                ``max_payload_bytes``; the status keeps its previous value.
        """
        self._ex.set_custom_status(value)

    # -- changing running code -------------------------------------------------

    def patched(self, change_id: str) -> bool:
        """Whether this execution runs the code of change ``change_id`` (Temporal's patching).

        Put the new code under ``if ctx.patched("id"):`` and keep the old code in the
        ``else``: new executions (and instances past the point when the change is
        deployed) take the new branch, recording a marker; replays of histories
        written before the change take the old one. Once every execution that
        could replay the old branch has finished, replace the call with
        :meth:`deprecate_patch` and drop the old branch; later still, drop the call.

        Example:
            >>> if ctx.patched("fraud-check"):
            ...     await ctx.call_activity(check_fraud, order)
            >>> await ctx.call_activity(charge, order)

        For a change of an orchestrator's whole shape, register a new version instead
        (``@app.orchestration(version="2")``): running instances keep their version.
        """
        return self._ex.patched(change_id)

    def deprecate_patch(self, change_id: str) -> None:
        """Mark change ``change_id``'s old branch as gone (after :meth:`patched`).

        Histories written with and without the change's marker both replay; new
        executions record nothing, so the call itself can be removed once the
        instances started before it have finished.
        """
        self._ex.deprecate_patch(change_id)

    # -- work ------------------------------------------------------------------

    @overload
    def call_activity(
        self,
        activity: Callable[[Any], Awaitable[T]],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> Task[T]: ...

    @overload
    def call_activity(
        self,
        activity: Callable[[Any], T],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> Task[T]: ...

    @overload
    def call_activity(
        self,
        activity: Callable[[], T],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> Task[T]: ...

    @overload
    def call_activity(
        self,
        activity: str,
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> Task[Any]: ...

    def call_activity(
        self,
        activity: Callable[..., Any] | str,
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> Task[Any]:
        """Schedule an activity; await the task for its result.

        Args:
            activity: the registered function or its name.
            input: the one input value (JSON-serialisable via pydantic).
            retry: a durable retry policy; without one a failure is final.
            timeout: schedule-to-close limit of each attempt (a durable timer); on
                expiry the task fails with ``ActivityTimeoutError`` and a late
                result is dropped.

        Raises (when awaited):
            ActivityFailed: the activity raised (after all retries); ``details`` has
                the original type, message and traceback.
        """
        return self._ex.schedule_activity(activity, input, retry, timeout)

    def call_sub_orchestrator(
        self,
        orchestration: Callable[..., Any] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Task[Any]:
        """Start a child orchestration and await its output.

        The child's id defaults to ``"<parent id>:<sequence id>"`` (deterministic;
        ``"<parent id>:g<generation>:<sequence id>"`` after ``continue_as_new``).

        Raises:
            OrchestrationUsageError: called inside a ``ctx.lock`` block, where the
                child could deadlock on its parent's lock (the orchestration fails
                and its lock is released).
            InvalidInstanceIdError: ``instance_id`` (or the default
                ``<parent id>:<sequence id>`` of a parent id near the 256-character
                limit) breaks the id rules of :mod:`durafka.ids`.

        Raises (when awaited):
            SubOrchestrationFailed: the child failed or was terminated.
        """
        return self._ex.schedule_sub_orchestration(orchestration, input, instance_id, retry)

    def create_timer(self, fire_at: datetime | timedelta) -> CompletableTask[None]:
        """A durable timer firing at ``fire_at`` (or after a ``timedelta`` from ``now()``).

        ``cancel()`` a timer nobody waits for any more, e.g. the loser of a
        ``when_any([event, timer])``: its firing is then dropped.
        """
        if isinstance(fire_at, timedelta):
            due_ms = self._ex.current_time_ms + int(fire_at.total_seconds() * 1000)
        else:
            if fire_at.tzinfo is None:
                raise ValueError("create_timer needs a timezone-aware datetime (e.g. UTC)")
            due_ms = int(fire_at.timestamp() * 1000)
        return self._ex.create_timer(due_ms)

    def sleep(self, delay: timedelta) -> CompletableTask[None]:
        """A durable sleep: ``await ctx.sleep(timedelta(days=30))``."""
        return self.create_timer(delay)

    def wait_for_external_event(
        self, name: str, *, type: Any = None, timeout: timedelta | None = None
    ) -> Task[Any]:
        """A task completed by the next event ``name`` raised to this instance.

        Events that arrived before the wait are buffered, in order.

        Args:
            name: the event name (case-sensitive).
            type: decode the event data into this type (default: plain JSON values).
            timeout: give up after this long (a durable timer): awaiting the task
                then raises :class:`durafka.errors.EventTimeoutError`.

        Example:
            >>> try:
            ...     approved = await ctx.wait_for_external_event(
            ...         "approval", timeout=timedelta(hours=72)
            ...     )
            ... except durafka.EventTimeoutError:
            ...     await ctx.call_activity(escalate, request)
        """
        return self._ex.wait_for_event(name, type, timeout)

    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Raise event ``name`` on another instance (one-way, durable).

        Raises:
            InvalidInstanceIdError: ``instance_id`` is not a valid orchestration id
                (:mod:`durafka.ids`).
        """
        self._ex.send_event(instance_id, name, data)

    # -- entities --------------------------------------------------------------

    def call_entity(self, entity: EntityId, operation: str, input: Any = None) -> Task[Any]:
        """Run ``operation`` on an entity and await its result.

        The result is decoded with the operation's return type when this app
        registers the entity, else returned as plain JSON values. Inside a
        ``ctx.lock`` block only the locked entities may be called.

        Raises (when awaited):
            EntityOperationFailed: the operation raised (its state changes were
                rolled back); ``details`` has the original type, message and traceback.
        """
        return self._ex.call_entity(entity, operation, input)

    def signal_entity(self, entity: EntityId, operation: str, input: Any = None) -> None:
        """Send a one-way operation to an entity (durable; nothing to await)."""
        self._ex.signal_entity(entity, operation, input)

    def lock(self, *entities: EntityId) -> EntityLock:
        """A critical section over several entities: ``async with ctx.lock(a, b): ...``.

        While locked, the entities run only this orchestration's operations;
        everyone else's wait in order. Locks are acquired in entity id order, so
        two critical sections never deadlock, and released when the block ends
        or the orchestration finishes, fails or is terminated. Locks do not nest.

        Example:
            >>> async with ctx.lock(source, target):
            ...     if await ctx.call_entity(source, "balance") >= amount:
            ...         await ctx.call_entity(source, "withdraw", amount)
            ...         await ctx.call_entity(target, "deposit", amount)
        """
        return EntityLock(self._ex, entities)

    @property
    def locked_entities(self) -> list[str]:
        """Ids of the entities the current ``ctx.lock`` block holds (empty outside one)."""
        return self._ex.locked_entities

    def continue_as_new(
        self, new_input: Any = None, *, keep_unprocessed_events: bool = True
    ) -> NoReturn:
        """Restart this instance with ``new_input`` and an empty history; never returns.

        Args:
            new_input: the input of the next generation.
            keep_unprocessed_events: carry buffered external events over.
        """
        raise ContinueAsNew(new_input, keep_unprocessed_events)

    @staticmethod
    def when_all(tasks: Sequence[Task[T]]) -> WhenAllTask[T]:
        """A task completing with all results, in input order (see :func:`durafka.when_all`)."""
        return when_all(tasks)

    @staticmethod
    def when_any(tasks: Sequence[Task[Any]]) -> WhenAnyTask:
        """A task completing with the first task to complete (see :func:`durafka.when_any`)."""
        return when_any(tasks)
