"""Records of other services that durafka cannot apply as they are (issue 11, case 5).

A start produced to the wrong partition (a partitioner other than murmur2) was
accepted there and its instance hung, since every later event went to the right
partition; records that could not be applied (an event for an unknown instance, a
message kind its target does not take, a signal to an unknown entity, a purge of a
running instance) were only logged and dropped. Now a misplaced record is
forwarded to its partition and the others are dead-lettered with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

import durafka
from durafka.codec.records import encode_message
from durafka.processor.rejects import FORWARDED_FROM_HEADER
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.topology import HubTopics, partition_for
from durafka.transport import TopicPartition
from durafka.transport.base import Record
from tests.e2e import apps
from tests.entities import apps as entity_apps
from tests.support.apps import hosted
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import (
    RawRecord,
    ids_on,
    produce_raw,
    produce_records,
    start_message,
)
from tests.support.waiting import wait_until


def test_a_start_on_the_wrong_partition_is_forwarded_with_its_headers(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    iid = "misplaced-order"
    right = partition_for(iid.encode(), n)
    wrong = (right + 1) % n
    start = start_message(iid, "greets_after_event", b'"from afar"')
    offset = produce_raw(
        app, topics.orchestrations, wrong, iid.encode(), start, [("traceparent", b"00-ab-01")]
    )
    with app.running(), app.sync_client() as client:
        client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=60)
        # The client sends the event where the id hashes to: the instance must be there.
        client.raise_event(iid, "go", "!")
        assert client.wait_for_completion(iid, timeout=60) == "Hello, from afar! !"
    forwarded = [r for r in records_of(app, topics.orchestrations, right) if r.value() == start]
    [record] = forwarded
    assert list(record.headers() or []) == [
        ("traceparent", b"00-ab-01"),
        (FORWARDED_FROM_HEADER, f"{topics.orchestrations}[{wrong}]@{offset}".encode()),
    ]


def test_a_start_and_an_event_on_the_wrong_partition_stay_in_order(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    iid = "misplaced-pair"
    wrong = (partition_for(iid.encode(), n) + 1) % n
    start = start_message(iid, "greets_after_event", b'"pair"')
    go = encode_message(iid, HistoryEvent(EventKind.EVENT_RAISED, 0, name="go", payload=b'"!"'))
    produce_records(
        app,
        [
            RawRecord(topics.orchestrations, wrong, iid.encode(), start),
            RawRecord(topics.orchestrations, wrong, iid.encode(), go),
        ],
    )
    with app.running(), app.sync_client() as client:
        assert client.wait_for_completion(iid, timeout=60) == "Hello, pair! !"
        assert read_dead_letters_now(app) == []


def test_an_event_for_a_running_instance_on_the_wrong_partition_is_forwarded(
    app_factory: Callable[..., durafka.App],
) -> None:
    # Today's processor took it from there: its instance cache is shared by the
    # partitions, and the event reached the instance from the wrong one (a KeyError
    # killed the processor when the instance's own partition had no share in the batch).
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    iid = "running-order"
    wrong = (partition_for(iid.encode(), n) + 1) % n
    go = encode_message(iid, HistoryEvent(EventKind.EVENT_RAISED, 0, name="go", payload=b'"!"'))
    with app.running(), app.sync_client() as client:
        client.start_new(apps.greets_after_event, "y", instance_id=iid)
        client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=60)
        produce_raw(app, topics.orchestrations, wrong, iid.encode(), go)
        assert client.wait_for_completion(iid, timeout=60) == "Hello, y! !"


def test_entity_signals_on_the_wrong_partition_reach_the_one_entity(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(registry=entity_apps.app.registry)
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    counter = entity_apps.counter("split")
    eid = str(counter).encode()
    right = partition_for(eid, n)
    signal = encode_message(
        str(counter), HistoryEvent(EventKind.ENTITY_OPERATION, 0, name="add", payload=b"2")
    )
    produce_records(
        app,
        [RawRecord(topics.orchestrations, (right + k) % n, eid, signal) for k in range(n)],
    )
    with app.running(), app.sync_client() as client:
        wait_until(
            lambda: (e := client.get_entity(counter)) is not None and e.state == 2 * n,
            timeout=60,
            what=f"the counter at {2 * n}",
        )
    published = {
        p
        for p in range(n)
        for r in records_of(app, topics.entities, p)
        if r.key() == eid and r.value() is not None
    }
    assert published == {right}


def records_of(app: durafka.App, topic: str, partition: int) -> list[Record]:
    consumer = app.transport.consumer(None)
    tp = TopicPartition(topic, partition)
    end = consumer.watermarks(tp)[1]
    consumer.assign({tp: None})
    out: list[Record] = []
    try:
        while consumer.position(tp) < end:
            out.extend(consumer.poll_batch(500, 0.2))
    finally:
        consumer.close()
    return out


def read_dead_letters_now(app: durafka.App) -> list[bytes | None]:
    """What ``H.dead-letters`` holds now (no waiting)."""
    topic = HubTopics(app.settings.task_hub).dead_letters
    return [
        r.value()
        for p in range(app.transport.partition_count(topic))
        for r in records_of(app, topic, p)
    ]


class Unapplicable(NamedTuple):
    target: str
    event: HistoryEvent
    reason: str


RUNNING = "running-target"
CASES = {
    "event for an unknown instance": Unapplicable(
        "nobody-here", HistoryEvent(EventKind.EVENT_RAISED, 0, name="go"), "unknown instance"
    ),
    "completion for an unknown instance": Unapplicable(
        "nobody-here",
        HistoryEvent(EventKind.TASK_COMPLETED, 0, seq=0, payload=b"1"),
        "unknown instance",
    ),
    "action kind sent to an orchestration": Unapplicable(
        RUNNING,
        HistoryEvent(EventKind.TASK_SCHEDULED, 0, seq=7, name="say_hello"),
        "orchestrations do not take TASK_SCHEDULED",
    ),
    "entity message sent to an orchestration": Unapplicable(
        RUNNING,
        HistoryEvent(EventKind.ENTITY_OPERATION, 0, name="add"),
        "orchestrations do not take ENTITY_OPERATION",
    ),
    "purge of a running instance": Unapplicable(
        RUNNING, HistoryEvent(EventKind.EXECUTION_PURGED, 0), "is RUNNING"
    ),
    "event sent to an entity": Unapplicable(
        "@Counter@x",
        HistoryEvent(EventKind.EVENT_RAISED, 0, name="go"),
        "entities do not take EVENT_RAISED",
    ),
    "signal to an unknown entity": Unapplicable(
        "@Nobody@x",
        HistoryEvent(EventKind.ENTITY_OPERATION, 0, name="add", payload=b"1"),
        "no entity named 'Nobody'",
    ),
    "malformed lock release": Unapplicable(
        "@Counter@x",
        HistoryEvent(EventKind.LOCK_RELEASED, 0, payload=b"{", instance_id="o"),
        "LOCK_RELEASED",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_record_that_cannot_be_applied_is_dead_lettered(
    app_factory: Callable[..., durafka.App], case: Unapplicable
) -> None:
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    partition = partition_for(case.target.encode(), n)
    value = encode_message(case.target, case.event)
    with hosted(app) as processor, app.sync_client() as client:
        client.start_new(apps.waits_forever, instance_id=RUNNING)
        wait_until(lambda: client.get_status(RUNNING), timeout=60, what="the running target")
        offset = produce_raw(app, topics.orchestrations, partition, case.target.encode(), value)
        [letter] = read_dead_letters(app.transport, app.settings.task_hub)
        # The partition goes on.
        [after] = ids_on(partition, n, "after", 1)
        client.start_new(apps.hello_world, after, instance_id=after)
        assert client.wait_for_completion(after, timeout=60) == f"Hello, {after}!"
    # Counted (a batch that rolled back and ran again would count its dead letters twice).
    assert processor.dead_letters.count >= 1
    assert (letter["source_topic"], letter["source_partition"]) == (
        topics.orchestrations,
        partition,
    )
    assert (letter["source_offset"], letter["key"], letter["value"]) == (
        offset,
        case.target.encode(),
        value,
    )
    assert case.reason in letter["reason"]
