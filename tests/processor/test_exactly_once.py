"""Exactly-once on the less common paths of the processor's commit (issue 10).

Each test drives processors by hand (``run_once``) on a ``memory://`` broker, so
the moment a fault lands is exact, and checks what the outside world sees: the
statuses and records committed to the hub's topics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import durafka
from durafka import OrchestrationContext
from durafka.client import Client
from durafka.codec.records import decode_message, decode_status
from durafka.registry import Registry
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport import TopicPartition
from durafka.transport.memory import MemoryBroker, MemoryTransport
from tests.support.apps import make_app

registry = Registry()


def double(x: int) -> int:
    """A trivial activity."""
    return 2 * x


async def doubler(ctx: OrchestrationContext, x: int) -> int:
    """One activity, its result as output."""
    return int(await ctx.call_activity(double, x))


registry.add_activity(double)
registry.add_orchestration(doubler)

PARTITIONS = 2


@pytest.fixture
def app(tmp_path: Path) -> Iterator[durafka.App]:
    """An app on a private memory broker, 2 partitions, no worker (results come by hand)."""
    app = make_app(
        f"memory://{uuid.uuid4().hex[:8]}",
        f"t{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        registry,
        partitions=PARTITIONS,
        local_activities=False,
    )
    app.ensure_topics()
    yield app
    app.close()


def committed_records(app: durafka.App, topic: str) -> list[tuple[str, object]]:
    """Every committed record of ``topic``, decoded (read_committed, from the beginning)."""
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    consumer = transport.consumer(None)
    n = transport.partition_count(topic)
    consumer.assign({TopicPartition(topic, p): 0 for p in range(n)})
    out: list[tuple[str, object]] = []
    while True:
        records = consumer.poll_batch(10_000, 0.0)
        if not records:
            break
        for r in records:
            value = r.value()
            if value is None:
                continue
            if topic.endswith(".status"):
                st = decode_status(value)
                out.append((st.instance_id, st.runtime_status))
            else:
                iid, event = decode_message(value)
                out.append((iid, event.kind))
    consumer.close()
    return out


def ids_on_each_partition(n: int) -> dict[int, list[str]]:
    """``n`` instance ids for each partition."""
    from durafka.partitioning import partition_for

    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(v) < n for v in found.values()):
        iid = f"i-{i}"
        p = partition_for(iid.encode(), PARTITIONS)
        if len(found[p]) < n:
            found[p].append(iid)
        i += 1
    return found


def test_records_of_a_partition_revoked_during_the_poll_are_not_committed(
    app: durafka.App,
) -> None:
    """A rebalance inside the poll revokes a partition whose records the batch holds.

    The processor must not commit their offsets: the new owner reads them from the
    committed offset and starts every instance. (Before the fix the offsets went into
    the transaction and the new owner started after them: the starts were lost.)
    """
    first = app.processor()
    first._consumer.subscribe(
        [first.topics.orchestrations], on_assign=first._on_assign, on_revoke=first._on_revoke
    )
    while len(first._owned) < PARTITIONS:
        first.run_once(poll_timeout=0.01)
    client = Client(app.settings, app.registry, app.transport)
    ids = ids_on_each_partition(3)
    for p_ids in ids.values():
        for iid in p_ids:
            client.start_new(doubler, 1, instance_id=iid)
    # A second processor joins: the next poll of the first returns the starts of both
    # partitions and, inside the same poll, gives one partition away.
    second = app.processor()
    second._consumer.subscribe(
        [second.topics.orchestrations], on_assign=second._on_assign, on_revoke=second._on_revoke
    )
    first.run_once(poll_timeout=0.01)
    assert len(first._owned) == 1, "the rebalance should have moved one partition"
    for _ in range(20):
        second.run_once(poll_timeout=0.01)
        first.run_once(poll_timeout=0.01)
    # Every instance was started by whoever owns its partition: its task was scheduled.
    topics = HubTopics(app.settings.task_hub)
    statuses = committed_records(app, topics.status)
    running = {iid for iid, st in statuses if st is RuntimeStatus.RUNNING}
    every_id = {iid for p_ids in ids.values() for iid in p_ids}
    assert running == every_id, f"instances never started: {sorted(every_id - running)}"
    for proc in (first, second):
        proc.close()
    client.close()
    MemoryBroker.reset()
