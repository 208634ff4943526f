"""The soak's client side: starts the workload at a steady rate, raises events, sends signals.

A :class:`Feeder` thread takes the next :class:`~tests.soak.workload.Start` of
the phase's plan every ``1 / rate`` seconds and writes it through one
:class:`~durafka.client.Client`; events are raised when due. While the broker
is down (killed, restarting) it waits instead of piling up writes that would
time out; a write that fails anyway is retried, and noted as in doubt.
"""

from __future__ import annotations

import functools
import heapq
import threading
import time
from collections.abc import Callable

from durafka.client import Client
from durafka.errors import InstanceAlreadyExistsError, TransportError, WaitTimeoutError
from tests.soak import app as soak
from tests.soak.workload import EventToRaise, Ledger, Start, WorkloadPlan

__all__ = ["Feeder"]

_ATTEMPTS = 5


class Feeder(threading.Thread):
    """Writes a phase's workload until told to finish.

    Args:
        client: the client to write with.
        plan: the phase's seeded sequence of starts.
        rate: starts per second.
        ledger: where what was written is recorded.
        broker_up: cleared while the broker is down.
        log: prints one line of the soak's log.
    """

    def __init__(
        self,
        client: Client,
        plan: WorkloadPlan,
        rate: float,
        ledger: Ledger,
        broker_up: threading.Event,
        log: Callable[[str], None],
    ) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self._client = client
        self._plan = plan
        self._interval = 1.0 / rate
        self._ledger = ledger
        self._lock = threading.Lock()
        self._broker_up = broker_up
        self._log = log
        self._events: list[tuple[float, int, EventToRaise]] = []
        self._stop_starting = threading.Event()
        #: Starts written so far (client signals included).
        self.written = 0
        #: Why the feeder stopped early, if it did.
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            next_start = time.monotonic()
            while not self._stop_starting.is_set():
                self._raise_due_events()
                now = time.monotonic()
                if now >= next_start:
                    self._write(self._plan.next())
                    # No catching up after a pause: the rate stays the rate.
                    next_start = max(next_start + self._interval, time.monotonic())
                    continue
                wake = next_start
                if self._events:
                    wake = min(wake, self._events[0][0])
                self._stop_starting.wait(max(0.0, wake - now))
            while self._events:  # the events of instances started before the end
                self._raise_due_events()
                if self._events:
                    time.sleep(max(0.0, self._events[0][0] - time.monotonic()))
        except BaseException as exc:  # reported by check()
            self.error = exc

    def finish(self, timeout: float = 120.0) -> None:
        """Stop starting; return once every pending event is raised."""
        self._stop_starting.set()
        self.join(timeout)
        self.check()
        if self.is_alive():
            raise AssertionError(f"the feeder did not finish within {timeout:.0f}s")

    def check(self) -> None:
        """Raise if the feeder stopped with an error."""
        if self.error is not None:
            raise AssertionError(f"writing the workload failed: {self.error!r}") from self.error

    def _write(self, start: Start) -> None:
        client = self._client
        if start.signals is not None:
            signals = start.signals
            for _ in range(signals.n):
                self._reliably(
                    f"signal to {signals.key}",
                    lambda: client.signal_entity(soak.counter(signals.key), "add", 1),
                    signal_to=signals.key,
                )
        else:
            assert start.orchestration is not None
            name = start.orchestration
            self._reliably(
                f"start of {start.instance_id}",
                lambda: client.start_new(name, start.input, instance_id=start.instance_id),
            )
            if start.event is not None:
                due = time.monotonic() + start.event.delay
                heapq.heappush(self._events, (due, self.written, start.event))
        with self._lock:
            self._ledger.record(start)
        self.written += 1

    def _raise_due_events(self) -> None:
        now = time.monotonic()
        while self._events and self._events[0][0] <= now:
            _, _, event = heapq.heappop(self._events)
            self._reliably(
                f"event {event.name} to {event.instance_id}",
                functools.partial(
                    self._client.raise_event, event.instance_id, event.name, event.data
                ),
            )

    def _reliably(
        self, what: str, write: Callable[[], object], *, signal_to: str | None = None
    ) -> None:
        """Write, retrying after an error whose outcome is unknown (noted as in doubt).

        Args:
            what: names the write in the log and the ledger.
            write: the write.
            signal_to: the counter a signal goes to (a retried one may count twice).
        """
        for attempt in range(1, _ATTEMPTS + 1):
            self._broker_up.wait()
            try:
                write()
                return
            except InstanceAlreadyExistsError:
                if attempt == 1:
                    raise
                return  # an earlier attempt was written after all
            except (TransportError, WaitTimeoutError) as exc:
                if attempt == _ATTEMPTS:
                    raise
                with self._lock:
                    self._ledger.in_doubt.append(f"{what}: {exc}")
                    if signal_to is not None:
                        self._ledger.signals_in_doubt[signal_to] += 1
                self._log(f"{what} failed ({exc}); retrying")
