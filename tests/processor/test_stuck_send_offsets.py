"""A processor whose ``send_offsets_to_transaction`` never returns after a broker outage
goes on with a new producer, and the batch takes effect once (real broker).

The transport's own test (``tests/transport/test_stuck_send_offsets.py``) says
why and how the call is given up. Here the processor's first producer blocks in
that call after the transport reported the broker down; before the fix the
processor thread waited there until the watchdog ended the process, and the
instance did not complete while it lived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.codec.records import decode_status
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport.kafka import KafkaTransport
from tests.processor.test_exactly_once import doubler, registry
from tests.support.apps import hosted, make_app
from tests.support.stuck import BlockingSendOffsets, a_broker_went_down, short_send_offsets_bound
from tests.support.topics import read_topic

pytestmark = pytest.mark.kafka


def test_a_processor_stuck_in_send_offsets_goes_on_with_a_new_producer(
    kafka_bootstrap: str, hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_send_offsets_bound(monkeypatch)
    app: durafka.App = make_app(kafka_bootstrap, hub, tmp_path / "state", registry, partitions=2)
    app.ensure_topics()
    transport = app.transport
    assert isinstance(transport, KafkaTransport)
    blocking: list[BlockingSendOffsets] = []
    make_producer = transport.transactional_producer

    def first_processor_producer_blocks(transactional_id: str, **config: Any) -> Any:
        producer = make_producer(transactional_id, **config)
        if ".processor" in transactional_id and not blocking:
            blocking.append(BlockingSendOffsets.wrap(producer))
        return producer

    monkeypatch.setattr(transport, "transactional_producer", first_processor_producer_blocks)
    a_broker_went_down(transport)
    try:
        with hosted(app), app.sync_client() as client:
            client.start_new(doubler, 21, instance_id="s")
            assert client.wait_for_completion("s", timeout=60.0) == 42
    finally:
        for b in blocking:
            b.release.set()
    assert blocking and len(blocking[0].threads) == 1

    topics = HubTopics(hub)
    statuses = [
        decode_status(value).runtime_status
        for key, value in read_topic(transport, topics.status)
        if key == b"s" and value is not None
    ]
    assert statuses.count(RuntimeStatus.COMPLETED) == 1
    tasks = [key for key, _ in read_topic(transport, topics.activities) if key == b"s"]
    assert len(tasks) == 1, "the aborted batch's activity task became visible"
    app.close()
