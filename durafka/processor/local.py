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
from concurrent.futures import Future, ThreadPoolExecutor

from durafka.codec.records import ActivityTask
from durafka.errors import UnknownFunctionError
from durafka.registry import Registry
from durafka.runtime.history import HistoryEvent
from durafka.worker import run_activity, run_activity_async

#: A handed-off activity not adopted within this many seconds is forgotten.
_HAND_OFF_TTL = 600.0


class LocalActivities:
    """A pool for activities run inside the processor's batch.

    Args:
        registry: where the activities are registered.
        max_concurrent: threads for sync activities.
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
        self._handed_off: dict[tuple[str, int], tuple[float, Future[HistoryEvent]]] = {}
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.wait_seconds = wait_seconds
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="durafka-local-activity")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def start(self, task: ActivityTask) -> Future[HistoryEvent] | None:
        """Start ``task`` locally; None when it is not registered here (a worker must run it)."""
        try:
            fdef = self.registry.activity(task.name)
        except UnknownFunctionError:
            return None
        if fdef.is_async:
            coro = run_activity_async(task, fdef, self.max_payload_bytes)
            return asyncio.run_coroutine_threadsafe(coro, self._event_loop())
        return self._pool.submit(run_activity, task, fdef, self.max_payload_bytes)

    def hand_off(self, task: ActivityTask, future: Future[HistoryEvent]) -> None:
        """Keep a still-running activity for the co-located worker to adopt.

        The processor produced its task to ``H.activities``; when this process's
        worker consumes that record it takes the running future instead of running
        the activity a second time (see :meth:`adopt`).
        """
        now = time.monotonic()
        with self._lock:
            self._handed_off[(task.instance_id, task.seq)] = (now, future)
            # Tasks consumed by a worker in another process are never adopted here.
            stale = [k for k, (at, _) in self._handed_off.items() if now - at > _HAND_OFF_TTL]
            for k in stale:
                del self._handed_off[k]

    def adopt(self, task: ActivityTask) -> Future[HistoryEvent] | None:
        """The running local execution of ``task``, if the processor handed it off."""
        with self._lock:
            entry = self._handed_off.pop((task.instance_id, task.seq), None)
        return None if entry is None else entry[1]

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="durafka-local-activity-loop", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """Stop the pool; running activities finish in the background, results unused."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
