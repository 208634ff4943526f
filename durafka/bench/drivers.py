"""The workload drivers: start instances through the client, time them, verify every result.

Each driver returns its metrics; the runner adds CPU readings and metadata.
Times are taken with ``time.perf_counter()`` on the client side: a result
counts when the client sees it, as a user would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from durafka.bench import workloads
from durafka.bench.progress import Progress
from durafka.bench.results import Metrics
from durafka.client import AsyncClient
from durafka.errors import BenchmarkError
from durafka.partitioning import partition_for
from durafka.status import OrchestrationStatus, RuntimeStatus

__all__ = [
    "Drive",
    "entity_counter",
    "fan_out",
    "hello_latency",
    "hello_throughput",
    "percentile",
    "sequence_throughput",
    "warm_up",
]

T = TypeVar("T")


@dataclasses.dataclass
class Drive:
    """What a driver works with.

    Attributes:
        client: the asyncio client of the run's task hub.
        progress: where progress goes.
        check: raises if a role of the system under test died.
        timeout: seconds a workload may take at most.
        max_in_flight: starts awaiting their acknowledgement at once.
        label: prefix of the progress labels (e.g. ``run 1/3``).
    """

    client: AsyncClient
    progress: Progress
    check: Callable[[], None]
    timeout: float
    max_in_flight: int
    label: str = ""

    async def guarded(
        self, what: str, work: Awaitable[T], status: Callable[[], str] | None = None
    ) -> T:
        """Await ``work`` within ``timeout``, failing early if a role dies.

        Args:
            what: names the work in error messages.
            work: the workload.
            status: says how far the work got, for the timeout message.
        """
        task = asyncio.ensure_future(work)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                self.check()
                if time.monotonic() > deadline:
                    got = f" ({status()})" if status is not None else ""
                    raise BenchmarkError(f"{what} did not finish within {self.timeout:g} s{got}")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _ids_covering(partitions: int, prefix: str) -> list[str]:
    """One instance id per partition (so a warm-up reaches every processor)."""
    ids: dict[int, str] = {}
    i = 0
    while len(ids) < partitions:
        iid = f"{prefix}-{i}"
        ids.setdefault(partition_for(iid.encode(), partitions), iid)
        i += 1
    return [ids[p] for p in range(partitions)]


async def warm_up(drive: Drive, partitions: int, timeout: float) -> float:
    """Run one W1 instance on every partition; returns the seconds it took.

    The roles are ready when it returns: every partition's processor and the
    worker have served a request, and the client's status view is current.
    """
    client = drive.client
    ids = _ids_covering(partitions, "warm-up")
    drive.progress.begin(f"{drive.label}warm-up (every partition)", len(ids))
    t0 = time.perf_counter()

    async def one(iid: str) -> None:
        await client.start_new(workloads.hello, "warm-up", instance_id=iid)
        await client.wait_for_completion(iid, timeout=None)
        drive.progress.advance()

    warm = dataclasses.replace(drive, timeout=timeout)
    await warm.guarded("the warm-up", asyncio.gather(*(one(i) for i in ids)))
    drive.progress.end()
    return time.perf_counter() - t0


@dataclasses.dataclass
class _Timeline:
    """When a batch of instances started and finished, as seen by the client and the processors.

    ``t0``, ``last_started`` and ``last_seen`` are ``perf_counter`` times; ``processed``
    is the seconds from ``t0`` to the last completion as stamped by a processor
    (its status record's ``last_updated_at``), which tells the processing apart
    from the delay of the client's status view.
    """

    t0: float
    last_started: float
    last_seen: float
    processed: float

    def metrics(self, n: int) -> Metrics:
        seen = self.last_seen - self.t0
        started = self.last_started - self.t0
        return {
            "n": n,
            "verified": n,
            "seconds": seen,
            "orchestrations_per_s": n / seen,
            "start_seconds": started,
            "starts_per_s": n / max(started, 1e-9),
            "processed_seconds": self.processed,
            "view_lag_ms": max(0.0, (seen - self.processed) * 1000),
        }


def _output(what: str, status: OrchestrationStatus) -> Any:
    if status.runtime_status is not RuntimeStatus.COMPLETED:
        failure = status.failure_details.message if status.failure_details else ""
        raise BenchmarkError(
            f"{what}: instance {status.instance_id} ended {status.runtime_status.value} {failure}"
        )
    return status.output


class _Window:
    """At most ``size`` starts awaiting their acknowledgement at once.

    Cheaper than ``asyncio.Semaphore``, whose ``acquire`` scans its waiters on
    every call (it showed up in the client's profile); here only the start loop waits.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._freed = asyncio.Event()

    async def acquire(self) -> None:
        while self._free == 0:
            self._freed.clear()
            await self._freed.wait()
        self._free -= 1

    def release(self) -> None:
        self._free += 1
        self._freed.set()

    async def run_each(self, n: int, work: Callable[[int], Awaitable[None]]) -> None:
        """Run ``work(0) ... work(n - 1)`` as tasks, each taking a slot before it exists.

        ``work`` must :meth:`release` its slot (when its start is acknowledged).
        """
        tasks = []
        try:
            for i in range(n):
                await self.acquire()
                tasks.append(asyncio.ensure_future(work(i)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


async def _start_and_await_all(
    drive: Drive,
    what: str,
    orchestration: Callable[..., Any],
    inputs: Sequence[Any],
    expected: Callable[[Any], Any],
    id_prefix: str,
) -> _Timeline:
    """Start one instance per input as fast as the client allows and await them all.

    Raises:
        BenchmarkError: an output is wrong, or it took longer than ``drive.timeout``.
    """
    client = drive.client
    window = _Window(drive.max_in_flight)
    last_started = last_seen = 0.0
    last_stamp_ms = 0
    started = completed = 0

    async def one(i: int, value: Any) -> None:
        nonlocal last_started, last_seen, last_stamp_ms, started, completed
        try:
            iid = await client.start_new(orchestration, value, instance_id=f"{id_prefix}-{i}")
        finally:
            window.release()
        last_started = max(last_started, time.perf_counter())
        started += 1
        status = await client.wait_for_status(iid, timeout=None)
        last_seen = max(last_seen, time.perf_counter())
        last_stamp_ms = max(last_stamp_ms, status.last_updated_at_ms)
        completed += 1
        output = _output(what, status)
        if output != expected(value):
            raise BenchmarkError(
                f"{what}: instance {iid} returned {output!r}, expected {expected(value)!r}"
            )
        drive.progress.advance()

    async def start_all() -> None:
        await window.run_each(len(inputs), lambda i: one(i, inputs[i]))

    drive.progress.begin(f"{drive.label}{what}", len(inputs))
    t0, t0_epoch = time.perf_counter(), time.time()
    await drive.guarded(
        what,
        start_all(),
        lambda: f"{started} of {len(inputs)} started, {completed} completed",
    )
    drive.progress.end()
    # Stamps are whole milliseconds, taken when a batch starts: a run shorter than a
    # millisecond or two can stamp its last completion just before t0.
    return _Timeline(t0, last_started, last_seen, max(0.0, last_stamp_ms / 1000 - t0_epoch))


async def hello_throughput(drive: Drive, n: int) -> Metrics:
    """W1 throughput: ``n`` hello instances at once; every output verified."""
    names = [f"user-{i}" for i in range(n)]
    timeline = await _start_and_await_all(
        drive, "W1 hello throughput", workloads.hello, names, workloads.expected_hello, "w1"
    )
    return timeline.metrics(n)


async def hello_latency(drive: Drive, n: int) -> Metrics:
    """W1 latency: ``n`` hello instances one at a time, start to completion seen by the client."""
    client = drive.client
    drive.progress.begin(f"{drive.label}W1 hello latency", n)
    latencies: list[float] = []

    async def run() -> None:
        for i in range(n):
            name = f"latency-{i}"
            t = time.perf_counter()
            iid = await client.start_new(workloads.hello, name, instance_id=f"w1l-{i}")
            output = await client.wait_for_completion(iid, timeout=None)
            latencies.append((time.perf_counter() - t) * 1000)
            if output != workloads.expected_hello(name):
                raise BenchmarkError(f"W1 latency: instance {iid} returned {output!r}")
            drive.progress.advance()

    await drive.guarded("W1 hello latency", run())
    drive.progress.end()
    latencies.sort()
    return {
        "n": n,
        "verified": n,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / n,
        "min_ms": latencies[0],
        "max_ms": latencies[-1],
    }


async def sequence_throughput(drive: Drive, n: int) -> Metrics:
    """W2: ``n`` instances of 5 activities in sequence; every output verified."""
    timeline = await _start_and_await_all(
        drive,
        "W2 sequence",
        workloads.sequence,
        list(range(n)),
        workloads.expected_sequence,
        "w2",
    )
    metrics = timeline.metrics(n)
    metrics["activities_per_s"] = n * workloads.SEQUENCE_STEPS / metrics["seconds"]
    return metrics


async def fan_out(drive: Drive, m: int) -> Metrics:
    """W3: one instance fans out ``m`` activities and sums them; output verified."""
    client = drive.client
    drive.progress.begin(f"{drive.label}W3 fan-out of {m}", 1)

    async def run() -> float:
        t = time.perf_counter()
        iid = await client.start_new(workloads.fan_out, m, instance_id="w3")
        output = await client.wait_for_completion(iid, timeout=None)
        wall = time.perf_counter() - t
        if output != workloads.expected_fan_out(m):
            raise BenchmarkError(
                f"W3: instance {iid} returned {output!r}, expected {workloads.expected_fan_out(m)}"
            )
        return wall

    wall = await drive.guarded("W3 fan-out", run())
    drive.progress.advance()
    drive.progress.end()
    return {"m": m, "verified": 1, "seconds": wall, "activities_per_s": m / wall}


async def entity_counter(drive: Drive, counters: int, signals: int) -> Metrics:
    """W4: ``signals`` signals spread over ``counters`` counters; every final count verified.

    Signal ``i`` adds one to counter ``i % counters``. The clock stops when the
    client sees every counter at its expected count; a count beyond it (an
    operation applied twice) fails the run at once.
    """
    client = drive.client
    ids = [workloads.counter_id(k) for k in range(counters)]
    expected = [workloads.expected_count(k, counters, signals) for k in range(counters)]
    # Opens the client's entity view before the clock starts (it is created on first use).
    await client.get_entity(ids[0])
    window = _Window(drive.max_in_flight)
    last_sent = 0.0

    async def send(i: int) -> None:
        nonlocal last_sent
        try:
            await client.signal_entity(ids[i % counters], "add", 1)
        finally:
            window.release()
        last_sent = max(last_sent, time.perf_counter())

    async def counts() -> list[int]:
        found = [await client.get_entity(eid) for eid in ids]
        return [0 if m is None else int(m.state) for m in found]

    async def run() -> float:
        sender = asyncio.ensure_future(window.run_each(signals, send))
        applied = 0
        try:
            while True:
                seen = await counts()
                over = [k for k in range(counters) if seen[k] > expected[k]]
                if over:
                    k = over[0]
                    raise BenchmarkError(
                        f"W4: counter {ids[k]} reached {seen[k]}, expected {expected[k]} "
                        "(a signal was applied more than once)"
                    )
                drive.progress.advance(sum(seen) - applied)
                applied = sum(seen)
                if seen == expected:
                    done = time.perf_counter()
                    await sender
                    return done
                if sender.done() and sender.exception() is not None:
                    await sender
                await asyncio.sleep(0.01)
        finally:
            if not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    drive.progress.begin(f"{drive.label}W4 entity counter ({counters} counters)", signals)
    t0 = time.perf_counter()
    done = await drive.guarded("W4 entity counter", run())
    drive.progress.end()
    wall = done - t0
    return {
        "counters": counters,
        "signals": signals,
        "verified": counters,
        "seconds": wall,
        "signals_per_s": signals / wall,
        "send_seconds": last_sent - t0,
        "sends_per_s": signals / max(last_sent - t0, 1e-9),
    }
