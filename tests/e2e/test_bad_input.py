"""Bad input end to end: undecodable records, non-determinism."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

import durafka
from durafka import RuntimeStatus
from durafka.codec.records import decode_dead_letter
from durafka.topology import HubTopics, partition_for
from durafka.transport import TopicPartition
from tests.e2e import apps
from tests.support.waiting import wait_until


@pytest.fixture
def code_change() -> Iterator[dict[str, bool]]:
    apps.CHANGED_CODE["enabled"] = False
    yield apps.CHANGED_CODE
    apps.CHANGED_CODE["enabled"] = False


def test_undecodable_record_goes_to_dead_letters(app_factory: Callable[..., durafka.App]) -> None:
    app = app_factory()
    with app.running(), app.sync_client() as client:
        topics = HubTopics(app.settings.task_hub)
        key = b"garbage-key"
        partition = partition_for(key, app.settings.partitions)
        producer = app.transport.producer()
        producer.produce(topics.orchestrations, partition, key, b"this is not avro")
        assert producer.flush(10) == 0
        producer.close()
        # Processing continues after the bad record.
        iid = client.start_new(apps.hello_world, "still alive")
        assert client.wait_for_completion(iid, timeout=60) == "Hello, still alive!"

        consumer = app.transport.consumer(None)
        n_dead = app.transport.partition_count(topics.dead_letters)
        consumer.assign({TopicPartition(topics.dead_letters, p): None for p in range(n_dead)})
        try:
            records = wait_until(
                lambda: consumer.poll_batch(10, 0.5), timeout=30, what="a dead letter"
            )
        finally:
            consumer.close()
        letter = decode_dead_letter(records[0].value() or b"")
        assert letter["source_topic"] == topics.orchestrations
        assert letter["source_partition"] == partition
        assert letter["key"] == key
        assert letter["value"] == b"this is not avro"
        assert "marker" in letter["reason"] or "Avro" in letter["reason"]


def test_code_change_between_steps_fails_with_non_determinism(
    app_factory: Callable[..., durafka.App], code_change: dict[str, bool]
) -> None:
    # cache_size=0: every step replays from history, as after a restart.
    app = app_factory(cache_size=0)
    with app.running(), app.sync_client() as client:
        iid = client.start_new(apps.changes_between_steps, instance_id=f"nd-{uuid.uuid4().hex[:6]}")
        wait_until(
            lambda: (
                (s := client.get_status(iid)) is not None
                and s.runtime_status is RuntimeStatus.RUNNING
            ),
            timeout=60,
        )
        code_change["enabled"] = True  # "deploy" a changed orchestrator
        client.raise_event(iid, "go")
        status = client.wait_for_status(iid, timeout=60)
    assert status.runtime_status is RuntimeStatus.FAILED
    details = status.failure_details
    assert details is not None
    assert "NonDeterminismError" in details.error_type
    assert "say_hello" in details.message and "add_one" in details.message
    assert "#0" in details.message
