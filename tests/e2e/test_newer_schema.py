"""A record written by a newer durafka stops its partition, loses nothing (issue 11, case 4).

During a rolling upgrade an old processor meets records whose schema fingerprint it
does not know. It used to dead-letter them and commit past them: the instance hung
(its start was gone). Now it stops consuming that partition alone, with an error
saying to upgrade, and commits nothing past the record; an upgraded processor
(here: the same app after its codec learns the newer schema, restarted) reads the
partition on from there.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

import durafka
from durafka.codec import avro
from durafka.codec.records import encode_message, event_to_dict
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import instance_key
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics, partition_for
from durafka.transport import TopicPartition
from tests.e2e import apps
from tests.support.apps import hosted
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import ids_on, produce_raw
from tests.support.metrics import gauge
from tests.support.waiting import wait_until


def newer_message_schema() -> dict[str, Any]:
    """OrchestrationMessage as a future release might write it: one field appended."""
    resolved = copy.deepcopy(avro.resolved_schema("OrchestrationMessage"))
    resolved["fields"].append({"name": "priority", "type": "int", "default": 0})
    return resolved


def encode_newer(instance_id: str, event: HistoryEvent) -> bytes:
    resolved = newer_message_schema()
    buf = io.BytesIO()
    buf.write(avro.MARKER + avro.fingerprint(resolved).to_bytes(8, "little"))
    schemaless_writer(
        buf,
        parse_schema(resolved, named_schemas={}),
        {"instance_id": instance_id, "event": event_to_dict(event), "priority": 9},
    )
    return buf.getvalue()


@pytest.fixture
def upgrade() -> Iterator[Callable[[], None]]:
    """Teach this process's codec the newer schema (what installing the new release does)."""
    codec = avro.codec("OrchestrationMessage")
    before = dict(codec.writers)
    yield lambda: codec.add_writer_schema(newer_message_schema())
    codec.writers.clear()
    codec.writers.update(before)


def test_an_old_processor_stops_the_partition_and_an_upgraded_one_goes_on(
    app_factory: Callable[..., durafka.App], upgrade: Callable[[], None]
) -> None:
    app = app_factory()
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    future = "from-the-future"
    partition = partition_for(future.encode(), n)
    start = HistoryEvent(
        EventKind.EXECUTION_STARTED, 0, name="hello_world", payload=b'"future"', execution_id="e1"
    )
    newer = encode_newer(future, start)
    behind = ids_on(partition, n, "behind", 2)
    elsewhere = [
        i
        for i in (f"elsewhere-{k}" for k in range(20))
        if partition_for(i.encode(), n) != partition
    ][:3]

    with hosted(app) as processor, app.sync_client() as client:
        offset = produce_raw(app, topics.orchestrations, partition, future.encode(), newer)
        for iid in behind + elsewhere:
            client.start_new(apps.hello_world, iid, instance_id=iid)
        # Every other partition goes on.
        for iid in elsewhere:
            assert client.wait_for_completion(iid, timeout=60) == f"Hello, {iid}!"
        assert partition in processor.stopped_partitions
        reason = processor.stopped_partitions[partition]
        assert "upgrade" in reason and f"{offset}" in reason
        consumer = app.transport.consumer(group_id=topics.processor_group)
        tp = TopicPartition(topics.orchestrations, partition)
        committed = consumer.committed([tp]).get(tp)
        consumer.close()
        assert committed is None or committed <= offset

    upgrade()
    with app.running(), app.sync_client() as client:
        assert client.wait_for_completion(future, timeout=60) == "Hello, future!"
        for iid in behind:
            assert client.wait_for_completion(iid, timeout=60) == f"Hello, {iid}!"
    assert processor.dead_letters.count == 0


def test_garbage_behind_the_marker_is_dead_lettered_not_taken_for_a_newer_release(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    key = b"not-the-id"
    partition = partition_for(key, n)
    # The marker and an unknown fingerprint, but the body does not start with the key.
    garbage = avro.MARKER + (0x1234).to_bytes(8, "little") + b"\x08abcd\x00\x00"
    with app.running(), app.sync_client() as client:
        offset = produce_raw(app, topics.orchestrations, partition, key, garbage)
        [letter] = read_dead_letters(app.transport, app.settings.task_hub)
        [after] = ids_on(partition, n, "after", 1)
        client.start_new(apps.hello_world, after, instance_id=after)
        assert client.wait_for_completion(after, timeout=60) == f"Hello, {after}!"
    assert letter["source_offset"] == offset
    assert "unknown schema fingerprint" in letter["reason"]


def test_a_stored_header_of_a_newer_release_stops_the_partition_not_the_instance(
    app_factory: Callable[..., durafka.App],
) -> None:
    # What a newer processor left in the changelog before this one took the partition.
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    iid = "upgraded-elsewhere"
    partition = partition_for(iid.encode(), n)
    with app.running(), app.sync_client() as client:
        client.start_new(apps.greets_after_event, "z", instance_id=iid)
        client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=60)
    store = app.store_factory.open(app.settings.task_hub, partition)
    header = store.get(instance_key(iid))
    store.close()
    assert header is not None
    newer = avro.MARKER + (0x0BADC0FFEE).to_bytes(8, "little") + header[10:] + b"\x02"
    produce_raw(app, topics.changelog, partition, instance_key(iid), newer)

    app = app_factory()
    go = encode_message(iid, HistoryEvent(EventKind.EVENT_RAISED, 0, name="go", payload=b'"!"'))
    with hosted(app) as processor, app.sync_client() as client:
        produce_raw(app, topics.orchestrations, partition, iid.encode(), go)
        wait_until(
            lambda: partition in processor.stopped_partitions,
            timeout=60,
            what=f"partition {partition} stopped",
        )
        assert "newer durafka release" in processor.stopped_partitions[partition]
        assert gauge(processor.metrics, "durafka_partitions_stopped", role="processor") == 1
        elsewhere = next(
            i
            for i in (f"other-{k}" for k in range(50))
            if partition_for(i.encode(), n) != partition
        )
        client.start_new(apps.hello_world, elsewhere, instance_id=elsewhere)
        assert client.wait_for_completion(elsewhere, timeout=60) == f"Hello, {elsewhere}!"
        status = client.get_status(iid)
        assert status is not None and status.runtime_status is RuntimeStatus.RUNNING
    assert processor.dead_letters.count == 0
