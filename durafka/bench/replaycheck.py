"""Speed of ``durafka replay-check`` on many histories: ``python -m durafka.bench.replaycheck``.

Writes the changelog of N running order orchestrations straight into a task
hub's ``H.state-changelog`` (no processor runs: the histories are made by the
real executor, step by step, with activity results fed back as a processor
would, and written as a processor writes them: per step, one history chunk and
the instance's header), then runs the replay check over it and reports how
long each part took and the peak RSS.

Each instance stops at a random point of its saga (1 to 7 steps: validate,
reserve, an approval event with a day-long timeout, a charge with a retry
policy, shipping and a notification in parallel), so histories have 5 to 26
events, and the changelog holds every overwritten header as an uncompacted one does.

Example:
    python -m durafka.bench.replaycheck --n 100000 --bootstrap 127.0.0.1:9092
    # again on the same hub, in a fresh process (the check's own RSS):
    python -m durafka.bench.replaycheck --hub rcXXXX --check-only --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import random
import resource
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from durafka.codec.records import InstanceState, encode_chunk, encode_state
from durafka.errors import EventTimeoutError
from durafka.management.replaycheck import replay_check
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.context import OrchestrationContext
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.runtime.retry import RetryPolicy
from durafka.runtime.tasks import when_all
from durafka.state.keys import history_key, instance_key
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.topology import HubTopics, load_hub_spec
from durafka.transport.base import Transport
from durafka.transport.factory import open_transport

__all__ = ["CheckResult", "GenerateResult", "check", "generate", "registry"]

_T0 = 1_780_000_000_000


def registry() -> Registry:
    """The order saga whose histories the benchmark writes and checks."""
    reg = Registry()
    for name in ("validate", "reserve", "charge", "ship", "notify"):

        def activity(order: str) -> str:
            return order

        activity.__name__ = name
        reg.add_activity(activity, name)

    async def order(ctx: OrchestrationContext, order_id: str) -> str:
        await ctx.call_activity("validate", order_id)
        await ctx.call_activity("reserve", order_id)
        ctx.set_custom_status("awaiting approval")
        try:
            await ctx.wait_for_external_event("approve", timeout=timedelta(days=1))
        except EventTimeoutError:
            return "expired"
        retry = RetryPolicy(max_attempts=3, first_interval=timedelta(seconds=1))
        await ctx.call_activity("charge", order_id, retry=retry)
        ctx.set_custom_status("shipping")
        await when_all([ctx.call_activity("ship", order_id), ctx.call_activity("notify", order_id)])
        ctx.set_custom_status("done")
        return "shipped"

    reg.add_orchestration(order, "order")
    return reg


def history_steps(reg: Registry, instance_id: str, steps: int) -> list[list[HistoryEvent]]:
    """The history chunks of ``instance_id`` after ``steps`` steps, as a processor writes them."""
    execution = uuid.uuid4().hex
    token = f"{execution}:0"
    ex = OrchestrationExecutor(reg, instance_id, "order")
    now = _T0
    incoming: list[HistoryEvent] = [
        HistoryEvent(
            EventKind.EXECUTION_STARTED,
            now,
            name="order",
            payload=f'"{instance_id}"'.encode(),
            execution_id=execution,
        )
    ]
    chunks: list[list[HistoryEvent]] = []
    for _ in range(steps):
        new = [HistoryEvent(EventKind.ORCHESTRATOR_STARTED, now), *incoming]
        result = ex.step(new)
        chunk = new + result.actions
        if result.completion is not None:
            chunk.append(result.completion)
        chunks.append(chunk)
        if result.completion is not None:
            break
        now += 1_000
        incoming = []
        for a in result.actions:
            if a.kind is EventKind.TASK_SCHEDULED:
                incoming.append(
                    HistoryEvent(
                        EventKind.TASK_COMPLETED,
                        now,
                        seq=a.seq,
                        payload=b'"ok"',
                        attempt=1,
                        execution_id=token,
                    )
                )
        if not incoming:  # waiting for the approval (its timeout timer is pending)
            incoming.append(HistoryEvent(EventKind.EVENT_RAISED, now, name="approve"))
    return chunks


@dataclass(frozen=True)
class GenerateResult:
    """What writing the changelog took."""

    hub: str
    instances: int
    events: int
    records: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class CheckResult:
    """What the replay check took."""

    checked: int
    would_fail: int
    records: int
    seconds: float
    histories_per_second: float
    peak_rss_mib: float


def generate(transport: Transport, hub: str, n: int, *, seed: int = 7) -> GenerateResult:
    """Write the changelog of ``n`` running order instances into ``hub`` (topics created)."""
    topics = HubTopics(hub)
    transport.ensure_topics(load_hub_spec(hub))
    partitions = transport.partition_count(topics.changelog)
    reg = registry()
    rnd = random.Random(seed)
    producer = transport.producer()
    began = time.perf_counter()
    events = records = size = 0
    try:
        for i in range(n):
            iid = f"order-{i:06d}"
            partition = partition_for(iid.encode(), partitions)
            chunks = history_steps(reg, iid, rnd.randint(1, 6))
            status = OrchestrationStatus(
                iid,
                "order",
                RuntimeStatus.RUNNING,
                f'"{iid}"'.encode(),
                None,
                None,
                None,
                _T0,
                _T0,
                None,
                chunks[0][1].execution_id,
            )
            length = 0
            for n_chunk, chunk in enumerate(chunks):
                length += len(chunk)
                state = InstanceState(status, history_chunks=n_chunk + 1, history_length=length)
                for key, value in (
                    (history_key(iid, n_chunk), encode_chunk(chunk)),
                    (instance_key(iid), encode_state(state)),
                ):
                    producer.produce(topics.changelog, partition, key, value)
                    records += 1
                    size += len(key) + len(value)
            events += length
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
    finally:
        producer.close()
    return GenerateResult(hub, n, events, records, size, time.perf_counter() - began)


def check(transport: Transport, hub: str) -> CheckResult:
    """Run the replay check over ``hub`` with the saga's code; time and peak RSS."""
    report = replay_check(transport, HubTopics(hub), registry())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return CheckResult(
        report.checked,
        report.would_fail,
        report.records,
        report.seconds,
        report.checked / report.seconds if report.seconds else 0.0,
        peak,
    )


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--hub", default=None, help="Task hub (default: a new one).")
    parser.add_argument("--check-only", action="store_true", help="Only check an existing hub.")
    args = parser.parse_args()
    hub = args.hub or f"rc{uuid.uuid4().hex[:8]}"
    transport = open_transport(args.bootstrap, {})
    try:
        if not args.check_only:
            print(generate(transport, hub, args.n))
        print(check(transport, hub))
    finally:
        transport.close()


if __name__ == "__main__":
    main()
