"""Activities run next to the processor, inside its batch (embedded mode).

When a processor and a worker share a process, a scheduled activity need not
travel through ``H.activities`` and back: the processor starts it on a local
pool right away and, if it finishes within ``local_activity_wait_ms``, applies
its result in the *same* batch, so schedule, result and the orchestrator's
next step commit in one transaction. Nothing is acknowledged before that
commit, so durability is unchanged: if the batch fails, it runs again and so
does the activity (activities are at-least-once anyway).

An activity still running when the wait is over takes the normal path: its
task is produced to ``H.activities`` and the running execution is handed off
to the co-located worker, which adopts it when it consumes that record instead
of running the activity again. Only a crash in between makes it run twice (the
processor drops the duplicate result).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from queue import Empty, SimpleQueue

from durafka.activities.execute import run_activity, run_activity_async
from durafka.activities.pool import CallbackThreadPool, EventLoopThread
from durafka.codec.records import ActivityTask
from durafka.errors import UnknownFunctionError
from durafka.registry import FunctionDef, Registry
from durafka.runtime.history import HistoryEvent

#: A handed-off activity not adopted within this many seconds is forgotten.
_HAND_OFF_TTL = 600.0


class LocalRun:
    """One activity started next to the processor.

    ``result`` is set when it finished within the batch; ``adopter`` when it was
    handed off to the worker instead (see :meth:`LocalActivities.collect`);
    ``seconds``: from its start to its result (for the metrics).
    """

    __slots__ = ("adopter", "fdef", "result", "seconds", "started", "task")

    def __init__(self, task: ActivityTask, fdef: FunctionDef) -> None:
        self.task = task
        self.fdef = fdef
        self.result: HistoryEvent | None = None
        self.adopter: Future[HistoryEvent] | None = None
        self.started = time.perf_counter()
        self.seconds = 0.0


class LocalActivities:
    """Threads (and an event loop) for activities run inside the processor's batch.

    No ``Future`` per activity (see :mod:`durafka.activities.pool`): a finished run
    comes back on a queue the processor waits on. A ``Future`` is made only
    for a run handed off to the worker.

    Args:
        registry: where the activities are registered.
        max_concurrent: threads for sync activities (started as needed).
        max_payload_bytes: the result size limit.
        wait_seconds: how long a batch waits for its local activities at most.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_concurrent: int,
        max_payload_bytes: int,
        wait_seconds: float,
    ) -> None:
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.wait_seconds = wait_seconds
        self._threads = CallbackThreadPool(max_concurrent, "durafka-local-activity")
        self._done: SimpleQueue[LocalRun] = SimpleQueue()
        # By (instance, execution, sequence id): sequence ids restart with each
        # execution, so the same pair of another execution is another task.
        self._handed_off: dict[_TaskKey, tuple[float, Future[HistoryEvent]]] = {}
        self._loop_thread = EventLoopThread("durafka-local-activity-loop")
        self._lock = threading.Lock()
        self._closed = False

    def start(self, task: ActivityTask) -> LocalRun | None:
        """Start ``task`` locally; None when it is not registered here (a worker must run it)."""
        try:
            fdef = self.registry.activity(task.name)
        except UnknownFunctionError:
            return None
        run = LocalRun(task, fdef)
        if fdef.is_async:
            self._loop_thread.loop().call_soon_threadsafe(self._start_async, run)
            return run
        self._threads.submit(self._run_sync, run)
        return run

    def collect(
        self, runs: list[LocalRun], timeout: float
    ) -> tuple[list[LocalRun], list[LocalRun]]:
        """Wait up to ``timeout`` s for ``runs`` (every run started since the last call).

        Returns the finished runs (``result`` set) and the unfinished ones, which
        are handed off: the processor produces their tasks to ``H.activities``,
        and when this process's worker consumes such a record it takes the
        running execution (:meth:`adopt`) instead of running the activity again.
        """
        finished: list[LocalRun] = []
        waiting = len(runs)
        deadline = time.monotonic() + timeout
        get = self._done.get
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                finished.append(get(timeout=remaining))
            except Empty:
                break
            waiting -= 1
        if not waiting:
            return finished, []
        with self._lock:
            # A run finishes under this lock: past here, each is done or handed off.
            self._drain_done(finished)
            unfinished = [run for run in runs if run.result is None]
            self._hand_off(unfinished)
        return finished, unfinished

    def hand_off(self, runs: list[LocalRun]) -> None:
        """Hand every run in ``runs`` off to the worker, finished or not.

        For when a batch's wait is spent: results that arrive later would start
        more work in a batch that must end. A finished run's result is kept for
        the worker to take right away.
        """
        with self._lock:
            self._drain_done([])
            self._hand_off(runs)

    def _drain_done(self, into: list[LocalRun]) -> None:
        while True:
            try:
                into.append(self._done.get_nowait())
            except Empty:
                return

    def _hand_off(self, runs: list[LocalRun]) -> None:
        now = time.monotonic()
        handed_off = self._handed_off
        for run in runs:
            adopter: Future[HistoryEvent] = Future()
            adopter.set_running_or_notify_cancel()
            if run.result is not None:
                adopter.set_result(run.result)
            run.adopter = adopter
            handed_off[_key(run.task)] = (now, adopter)
        # Tasks consumed by a worker in another process are never adopted here.
        for key in [k for k, (at, _) in handed_off.items() if now - at > _HAND_OFF_TTL]:
            del handed_off[key]

    def adopt(self, task: ActivityTask) -> Future[HistoryEvent] | None:
        """The running local execution of ``task``, if the processor handed it off."""
        with self._lock:
            entry = self._handed_off.pop(_key(task), None)
        return None if entry is None else entry[1]

    def _run_sync(self, run: LocalRun) -> None:
        self._finish(run, run_activity(run.task, run.fdef, self.max_payload_bytes))

    def _start_async(self, run: LocalRun) -> None:
        coro = run_activity_async(run.task, run.fdef, self.max_payload_bytes)
        task = asyncio.ensure_future(coro)

        def done(t: asyncio.Future[HistoryEvent]) -> None:
            if not t.cancelled():  # cancelled only when the process shuts down
                self._finish(run, t.result())

        task.add_done_callback(done)

    def _finish(self, run: LocalRun, event: HistoryEvent) -> None:
        run.seconds = time.perf_counter() - run.started
        with self._lock:
            adopter = run.adopter
            if adopter is None:
                run.result = event
                self._done.put(run)
        if adopter is not None:
            adopter.set_result(event)

    def close(self) -> None:
        """Stop the threads; running activities finish in the background, results unused."""
        if self._closed:
            return
        self._closed = True
        self._threads.shutdown()
        self._loop_thread.stop()


_TaskKey = tuple[str, str | None, int]


def _key(task: ActivityTask) -> _TaskKey:
    return (task.instance_id, task.execution_id, task.seq)
