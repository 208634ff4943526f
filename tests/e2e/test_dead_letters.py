"""Records no processor or worker can use become dead letters, and the partition goes on.

Issue 11, case 7: a value just under Kafka's record size limit fits its input topic,
but a dead letter that copied it whole (plus its own fields) did not: the
processor retried its batch forever and the worker re-ran every task behind the
record. A dead letter now always fits: the value is cut, its size and SHA-256 kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import durafka
from durafka.topology import HubTopics, partition_for
from tests.e2e import apps
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import ids_on, produce_raw

#: The issue's value: within the topic's limit (1,048,588), but its dead letter copied
#: whole exceeds librdkafka's default ``message.max.bytes`` (1,000,000).
NEARLY_A_MEGABYTE = 999_990


def test_an_oversized_dead_letter_is_cut_and_the_partition_flows(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    key = b"garbage"
    partition = partition_for(key, n)
    garbage = bytes(range(256)) * (NEARLY_A_MEGABYTE // 256) + b"x" * (NEARLY_A_MEGABYTE % 256)
    with app.running(), app.sync_client() as client:
        app.ensure_topics()
        produce_raw(app, topics.orchestrations, partition, key, garbage, [("origin", b"fuzzer")])
        started = [
            client.start_new(apps.hello_world, iid, instance_id=iid)
            for iid in ids_on(partition, n, "after-garbage", 3)
        ]
        for iid in started:
            assert client.wait_for_completion(iid, timeout=60) == f"Hello, {iid}!"
        letters = read_dead_letters(app.transport, app.settings.task_hub)
    [letter] = letters
    assert letter["source_topic"] == topics.orchestrations
    assert letter["source_partition"] == partition
    assert letter["key"] == key
    assert letter["headers"] == [{"key": "origin", "value": b"fuzzer"}]
    assert letter["value_size"] == NEARLY_A_MEGABYTE
    assert letter["value_sha256"] == hashlib.sha256(garbage).digest()
    assert letter["truncated"] == ["value"]
    assert 0 < len(letter["value"]) < NEARLY_A_MEGABYTE
    assert garbage.startswith(letter["value"])
    assert letter["durafka_version"] == durafka.__version__


def test_an_oversized_task_is_dead_lettered_once_and_tasks_behind_it_run_once(
    app_factory: Callable[..., durafka.App],
) -> None:
    # No local activities: every task goes through H.activities to the worker.
    app = app_factory(local_activities=False)
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    key = b"garbage"
    partition = partition_for(key, n)
    garbage = b"\xff" * NEARLY_A_MEGABYTE
    names = ids_on(partition, n, f"behind-{app.settings.task_hub}", 3)
    with app.running(), app.sync_client() as client:
        app.ensure_topics()
        produce_raw(app, topics.activities, partition, key, garbage, [("origin", b"fuzzer")])
        for name in names:
            client.start_new(apps.runs_counted, name, instance_id=name)
        for name in names:
            assert client.wait_for_completion(name, timeout=60) == name
        letters = read_dead_letters(app.transport, app.settings.task_hub)
    assert {name: apps.EXECUTIONS[name] for name in names} == dict.fromkeys(names, 1)
    [letter] = letters
    assert letter["source_topic"] == topics.activities
    assert letter["value_size"] == NEARLY_A_MEGABYTE
    assert letter["value_sha256"] == hashlib.sha256(garbage).digest()
