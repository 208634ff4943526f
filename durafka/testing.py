"""Testing orchestrations: an in-process environment with a clock that skips ahead.

:class:`TestEnvironment` runs an app's processor and worker on a private
``memory://`` broker with a :class:`VirtualClock`. When nothing is left to do
but wait for a durable timer, it moves the clock to that timer's due time, so
a test of a 30-day timer runs in milliseconds.

Example:
    >>> from durafka.testing import TestEnvironment
    >>> async def test_approval_times_out():
    ...     async with TestEnvironment(app) as env:
    ...         iid = await env.client.start_new(approval, order)
    ...         assert await env.wait_for_completion(iid) == "escalated"
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from durafka.app import App
from durafka.client import AsyncClient
from durafka.codec.history_json import loads_history
from durafka.errors import WaitTimeoutError
from durafka.hosting import Runner
from durafka.processor import Processor
from durafka.registry import Registry
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import OrchestrationStatus
from durafka.topology import HubTopics
from durafka.transport.memory import MemoryBroker


class VirtualClock:
    """Wall-clock time plus an offset that only grows; thread-safe.

    Call it (``clock()``) for the current time in seconds, like ``time.time``.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self._offset

    def advance(self, delta: timedelta) -> None:
        """Move time forward by ``delta``."""
        with self._lock:
            self._offset += max(0.0, delta.total_seconds())

    def skip_to(self, when: float) -> None:
        """Move time forward to ``when`` (seconds since the epoch), if it is later."""
        with self._lock:
            now = time.time() + self._offset
            if when > now:
                self._offset += when - now


class TestEnvironment:
    """Runs ``app`` on a private memory:// broker with a time-skipping clock.

    Args:
        app: the app whose orchestrations and activities to run (its settings are
            copied; its transport is not used).
        auto_skip: skip the clock to the next due timer whenever the system is idle.

    Attributes:
        clock: the virtual clock (``env.clock.advance(timedelta(days=1))``).
        client: an asyncio client bound to the environment.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, *, auto_skip: bool = True) -> None:
        broker_name = f"durafka-test-{uuid.uuid4().hex[:12]}"
        update: dict[str, Any] = {
            "bootstrap_servers": f"memory://{broker_name}",
            "use_memory_state": True,
        }
        if "finished_retention_ms" not in app.settings.model_fields_set:
            # Skipping the clock to the purge timers of finished instances would purge
            # what a test is about to look at; purging is tested when asked for.
            update["finished_retention_ms"] = None
        if "unknown_activity_grace_ms" not in app.settings.model_fields_set:
            # One version runs here: no upgraded worker will come for a task of an
            # unregistered activity, so it fails at once.
            update["unknown_activity_grace_ms"] = 0
        self.app = App(settings=app.settings.model_copy(update=update))
        self.app.registry = app.registry
        self.broker = MemoryBroker.get(broker_name)
        self.clock = VirtualClock()
        self.auto_skip = auto_skip
        self._topics = HubTopics(self.app.settings.task_hub)
        self._processor: Processor | None = None
        self._runner: Runner | None = None
        self._client: AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        """The environment's asyncio client."""
        if self._client is None:
            raise RuntimeError("use 'async with TestEnvironment(app) as env' first")
        return self._client

    async def __aenter__(self) -> TestEnvironment:
        self._processor = self.app.processor(clock=self.clock)
        runner = Runner()
        runner.add("processor", self._processor.run)
        runner.add("worker", self.app.worker().run)
        runner.start()
        self._runner = runner
        self._client = self.app.client()
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
        if self._runner is not None:
            await asyncio.to_thread(self._runner.stop)
        self.app.close()
        MemoryBroker.reset(self.broker.name)

    def is_idle(self) -> bool:
        """Nothing is in flight: every record was processed and committed."""
        t = self._topics
        return (
            self._processor is not None
            and self._processor.is_idle
            and self.broker.lag(f"{t.hub}.processors", t.orchestrations) == 0
            and self.broker.lag(f"{t.hub}.workers", t.activities) == 0
        )

    def skip_to_next_timer(self) -> bool:
        """If idle and a timer is pending, move the clock to it; returns whether it did."""
        if self._processor is None or not self.is_idle():
            return False
        due_ms = self._processor.next_timer_ms()
        if due_ms is None:
            return False
        self.clock.skip_to(due_ms / 1000)
        return True

    async def wait_for_status(self, instance_id: str, timeout: float = 30.0) -> OrchestrationStatus:
        """Wait (in real time) for a terminal status, skipping the clock while idle."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.client.get_status(instance_id)
            if status is not None and status.is_terminal:
                return status
            if time.monotonic() > deadline:
                raise WaitTimeoutError(
                    f"instance {instance_id!r} did not finish within {timeout}s of real time "
                    f"(last status: {status.runtime_status.value if status else 'none'})"
                )
            if self.auto_skip and self.skip_to_next_timer():
                continue
            await asyncio.sleep(0.005)

    async def wait_for_completion(self, instance_id: str, timeout: float = 30.0) -> Any:
        """The instance's output once it completes (time-skipping); raises if it failed."""
        await self.wait_for_status(instance_id, timeout)
        return await self.client.wait_for_completion(instance_id, timeout=timeout)


def replay(
    app: App | Registry,
    history: list[HistoryEvent] | str,
    *,
    instance_id: str = "replayed",
) -> OrchestrationExecutor:
    """Replay ``history`` against the app's current code; raise if the code diverged.

    The test of a code change against the executions already running: keep a few
    histories of real instances (``client.get_history(id)``, or the JSON that
    ``durafka history ID --json`` writes) next to your tests, and replay them in CI.
    Pure: nothing runs but the orchestrator (no activity, no I/O).

    Args:
        app: the app (or its registry) with the code to check.
        history: the events, or their JSON text.
        instance_id: the id the orchestrator sees (``ctx.instance_id``).

    Returns:
        The executor after the replay (``is_complete``, its completion, ...).

    Raises:
        NonDeterminismError: the code does not take the recorded calls (the message
            names the sequence id and both calls).
        ValueError: the history does not start with an orchestration's start.

    Example:
        >>> from durafka.testing import replay
        >>> replay(app, Path("tests/golden/order-42.json").read_text())
    """
    events = loads_history(history) if isinstance(history, str) else list(history)
    registry = app.registry if isinstance(app, App) else app
    start = next((e for e in events if e.kind is EventKind.EXECUTION_STARTED), None)
    if start is None or start.name is None:
        raise ValueError("the history has no EXECUTION_STARTED naming its orchestration")
    executor = OrchestrationExecutor(registry, instance_id, start.name)
    executor.replay(events)
    if executor.divergence is not None:
        raise executor.divergence
    return executor
