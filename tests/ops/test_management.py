"""Management: the operations under the CLI and the HTTP API, on memory:// and the real broker."""

from __future__ import annotations

import pytest

import durafka
from durafka.codec.records import encode_message
from durafka.errors import (
    InstanceNotFinishedError,
    InstanceNotFoundError,
    InstanceNotRunningError,
    InvalidInstanceIdError,
    SerializationError,
    UnknownFunctionError,
)
from durafka.management import Management
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import RuntimeStatus
from durafka.transport.base import TopicPartition
from tests.support.waiting import wait_until

ORDER = {"item": "book", "quantity": 2}


def _written(management: Management) -> int:
    """Offsets used so far on ``H.orchestrations`` (what a command would add to)."""
    topic = management.topics.orchestrations
    consumer = management.transport.consumer(None)
    try:
        count = management.transport.partition_count(topic)
        return sum(consumer.watermarks(TopicPartition(topic, p))[1] for p in range(count))
    finally:
        consumer.close()


def _status(management: Management, iid: str, *statuses: RuntimeStatus) -> RuntimeStatus:
    return wait_until(
        lambda: (
            s.runtime_status
            if (s := management.client.get_status(iid)) is not None and s.runtime_status in statuses
            else None
        ),
        timeout=60,
        what=f"{iid} to be {statuses}",
    )


def test_lifecycle_of_an_instance(management: Management) -> None:
    iid = management.start("approval", ORDER, instance_id="order-1")
    _status(management, iid, RuntimeStatus.RUNNING)

    management.suspend(iid, "stock check")
    _status(management, iid, RuntimeStatus.SUSPENDED)
    with pytest.raises(InstanceNotRunningError, match="cannot be suspended"):
        management.suspend(iid)
    management.resume(iid)
    _status(management, iid, RuntimeStatus.RUNNING)

    management.raise_event(iid, "approve", {"by": "ana"})
    _status(management, iid, RuntimeStatus.COMPLETED)
    detail = management.get_instance(iid)
    assert detail.output == {
        "item": "book",
        "decision": {"by": "ana"},
        "greeting": "Hello, book!",
    }
    assert detail.input == ORDER
    assert detail.custom_status == {"waiting_for": "approve"}

    kinds = [e.kind for e in management.history(iid)]
    assert kinds[:2] == [EventKind.ORCHESTRATOR_STARTED, EventKind.EXECUTION_STARTED]
    assert EventKind.EVENT_RAISED in kinds and EventKind.EXECUTION_COMPLETED in kinds
    spans = management.instance_page(iid).timeline
    assert [(s.kind, s.name, s.outcome) for s in spans] == [
        ("event", "approve", "completed"),
        ("activity", "greet", "completed"),
    ]
    assert spans[1].duration_ms is not None and spans[1].duration_ms >= 0

    # A finished instance: restart runs it again with the same input, purge deletes it.
    first = detail.execution_id
    execution = management.restart(iid)
    assert execution != first
    wait_until(
        lambda: (
            (s := management.client.get_status(iid)) is not None
            and s.execution_id == execution
            and s.runtime_status is RuntimeStatus.RUNNING
        ),
        timeout=60,
        what="the restarted execution to run",
    )
    management.terminate(iid, "enough")
    _status(management, iid, RuntimeStatus.TERMINATED)
    assert management.get_instance(iid).output == "enough"
    management.purge(iid)
    wait_until(lambda: management.client.get_status(iid) is None, timeout=60, what="the purge")
    with pytest.raises(InstanceNotFoundError):
        management.get_instance(iid)


def test_failure_children_and_listing(management: Management) -> None:
    failed = management.start("failing", "kaput", instance_id="f-1")
    parent = management.start("parent", "Ana", instance_id="p-1")
    _status(management, failed, RuntimeStatus.FAILED)
    _status(management, parent, RuntimeStatus.COMPLETED)

    failure = management.get_instance(failed).failure
    assert failure is not None and failure.message.endswith("ValueError: kaput")
    assert failure.stack_trace is not None and "ValueError: kaput" in failure.stack_trace
    assert management.instance_page(parent).children == ["p-1-child"]
    assert management.get_instance("p-1-child").parent_instance_id == "p-1"

    counts = management.counts()
    assert counts.counts[RuntimeStatus.FAILED] == 1
    assert counts.counts[RuntimeStatus.COMPLETED] == 2 and counts.total == 3
    assert management.counts("hello").counts[RuntimeStatus.COMPLETED] == 1
    assert management.orchestration_names()["parent"] == 1

    by_status = management.list_instances(status=["COMPLETED"])
    assert sorted(i.instance_id for i in by_status.items) == ["p-1", "p-1-child"]
    by_prefix = management.list_instances(id_prefix="p-1-")
    assert [i.instance_id for i in by_prefix.items] == ["p-1-child"]
    first = management.list_instances(page_size=2, descending=True)
    rest = management.list_instances(page_size=2, descending=True, continuation=first.continuation)
    assert rest.continuation is None
    ids = [i.instance_id for i in first.items + rest.items]
    assert sorted(ids) == ["f-1", "p-1", "p-1-child"]
    created = [i.created_at_ms for i in first.items + rest.items]
    assert created == sorted(created, reverse=True)


def test_bad_input_is_refused_before_anything_is_written(management: Management) -> None:
    done = management.start("hello", "Ana", instance_id="done")
    _status(management, done, RuntimeStatus.COMPLETED)
    before = _written(management)

    with pytest.raises(UnknownFunctionError, match="no orchestration named 'nope'"):
        management.start("nope", None)
    with pytest.raises(SerializationError, match="does not match its type"):
        management.start("approval", {"item": "book"})
    with pytest.raises(InvalidInstanceIdError):
        management.terminate("bad\x00id")
    with pytest.raises(InstanceNotFoundError):
        management.terminate("never-started")
    with pytest.raises(InstanceNotFoundError):
        management.raise_event("never-started", "approve")
    with pytest.raises(InstanceNotRunningError, match="COMPLETED and cannot be terminated"):
        management.terminate(done)
    with pytest.raises(InstanceNotRunningError):
        management.resume(done)
    with pytest.raises(ValueError, match="event name"):
        management.raise_event(done, "")
    with pytest.raises(UnknownFunctionError, match="no entity named 'Nope'"):
        management.signal_entity("Nope", "k", "add", 1)
    with pytest.raises(UnknownFunctionError, match="has no operation 'sub'"):
        management.signal_entity("Counter", "k", "sub", 1)
    with pytest.raises(SerializationError):
        management.signal_entity("Counter", "k", "add", "not a number")
    with pytest.raises(InvalidInstanceIdError):
        management.signal_entity("Count@er", "k", "add", 1)
    with pytest.raises(ValueError, match="continuation"):
        management.list_instances(continuation="garbage!")

    running = management.start("approval", ORDER, instance_id="running")
    _status(management, running, RuntimeStatus.RUNNING)
    after_start = _written(management)
    assert after_start == before + 1  # only the start above was written
    with pytest.raises(InstanceNotFinishedError):
        management.restart(running)
    with pytest.raises(InstanceNotFinishedError):
        management.purge(running)
    assert _written(management) == after_start


def test_entities(management: Management) -> None:
    management.signal_entity("Counter", "a", "add", 5)
    management.signal_entity("Counter", "b", "add", 1)
    management.signal_entity("Counter", "a", "add", 2)
    wait_until(
        lambda: (
            len(management.list_entities().items) == 2
            and management.get_entity("Counter", "a").state == 7
        ),
        timeout=60,
        what="both entities",
    )
    page = management.list_entities(page_size=1)
    assert [e.entity_id for e in page.items] == ["@Counter@a"]
    assert page.continuation is not None
    management.delete_entity("Counter", "a")
    wait_until(
        lambda: [e.key for e in management.list_entities().items] == ["b"],
        timeout=60,
        what="the delete",
    )
    with pytest.raises(InstanceNotFoundError):
        management.get_entity("Counter", "a")


def test_dead_letters_newest_first_and_by_id(management: Management) -> None:
    """Records another service wrote that durafka cannot use, read back through paging."""
    topic = management.topics.orchestrations
    partitions = management.transport.partition_count(topic)
    producer = management.transport.producer()
    keys = [f"bad-{n}".encode() for n in range(5)]
    for key in keys:
        # A valid message under another id: its key is not its instance id.
        value = encode_message("someone-else", HistoryEvent(EventKind.EVENT_RAISED, 0, name="x"))
        producer.produce(topic, partition_for(key, partitions), key, value)
    producer.produce(topic, 0, b"garbage", b"not avro")
    assert producer.flush(10) == 0
    producer.close()

    def all_letters() -> list[str]:
        found, token = [], None
        while True:
            page = management.dead_letters(limit=2, continuation=token)
            found += [d.id for d in page.items]
            token = page.continuation
            if token is None:
                return found

    def six() -> list[str] | None:
        found = all_letters()
        return found if len(found) == 6 else None

    ids = wait_until(six, timeout=60, what="six dead letters")
    assert len(set(ids)) == 6  # paging returned each once
    letters = [management.dead_letter(i) for i in ids]
    times = [d.failed_at_ms for d in letters]
    assert times == sorted(times, reverse=True)
    assert {d.key for d in letters} == {k.decode() for k in keys} | {"garbage"}
    garbage = next(d for d in letters if d.key == "garbage")
    assert garbage.value == "not avro" and garbage.source_topic == topic
    with pytest.raises(InstanceNotFoundError):
        management.dead_letter("0:999999")
    with pytest.raises(ValueError, match="partition"):
        management.dead_letter("zero")


def test_partitions_owner_and_lag(management: Management, running_app: durafka.App) -> None:
    iid = management.start("hello", "Ana")
    _status(management, iid, RuntimeStatus.COMPLETED)

    def settled() -> bool:
        info = management.partitions()
        inputs = [p for p in info.partitions if p.topic == management.topics.orchestrations]
        return (
            len(inputs) == running_app.settings.partitions
            and all(p.owner is not None and p.lag == 0 for p in inputs)
            and len(info.processors) == 1
        )

    wait_until(settled, timeout=60, what="every input partition owned, nothing waiting")
    info = management.partitions()
    assert {p.state for p in info.partitions} == {"idle"}
    assert sum(p.end for p in info.partitions if p.topic == management.topics.orchestrations) > 0
    points = management.throughput()
    assert points and all(p.orchestrations_done >= 0 for p in points)


def test_topology_describe_and_diff(management: Management, running_app: durafka.App) -> None:
    report = management.topology(partitions=running_app.settings.partitions)
    assert report.in_sync, report
    assert report.topics[0].key == "orchestrations"
    assert all(t.exists and t.partitions == t.expected_partitions for t in report.topics)
    assert report.topics[0].partitions == 4
    drifted = management.topology(partitions=6)
    assert not drifted.in_sync
    orchestrations = drifted.topics[0]
    assert orchestrations.differences == [
        f"{orchestrations.name}: partition count expected 6, actual 4"
    ]
    other = Management(running_app.settings.model_copy(update={"task_hub": "nohub-x"}))
    try:
        missing = other.topology()
    finally:
        other.close()
    assert not missing.in_sync and not any(t.exists for t in missing.topics)


async def test_async_client_restarts_a_finished_instance(running_app: durafka.App) -> None:
    async with running_app.client() as client:
        iid = await client.start_new("hello", "Ana", instance_id="again")
        first = await client.wait_for_status(iid)
        with pytest.raises(InstanceNotFoundError):
            await client.restart("never-started")
        execution = await client.restart(iid)
        second = await client.wait_for_status(iid)  # waits for the new execution
    assert first.execution_id != execution == second.execution_id
    assert second.runtime_status is RuntimeStatus.COMPLETED and second.output == "Hello, Ana!"
