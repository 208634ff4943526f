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
from durafka.partitioning import partition_for
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from durafka.transport.kafka import KafkaTransport
from tests.processor.test_exactly_once import doubler, registry
from tests.support.apps import hosted, make_app
from tests.support.stuck import BlockingSendOffsets, a_broker_went_down, short_send_offsets_bound
from tests.support.topics import read_topic

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("partitions", [None, [0, 1]], ids=["group", "static"])
def test_a_processor_stuck_in_send_offsets_goes_on_with_a_new_producer(
    kafka_bootstrap: str,
    hub: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    partitions: list[int] | None,
) -> None:
    """Static ranges have a producer per partition: the one given up and, since the
    others lived through the same outage (the soak saw them stuck in turn, each for
    the call's whole bound), the others are replaced at once as well."""
    short_send_offsets_bound(monkeypatch)
    app: durafka.App = make_app(kafka_bootstrap, hub, tmp_path / "state", registry, partitions=2)
    app.ensure_topics()
    transport = app.transport
    assert isinstance(transport, KafkaTransport)
    blocking: list[BlockingSendOffsets] = []
    made: list[str] = []
    make_producer = transport.transactional_producer

    topics = HubTopics(hub)
    home = partition_for(b"s", 2)
    # Group mode commits with the processor's own id (a group processor also makes
    # the partitions' producers once, to fence static ranges); a static range with
    # the id of the partition of "s".
    static_ids = [topics.partition_transactional_id(p) for p in range(2)]
    other = None if partitions is None else static_ids[1 - home]
    committing: list[str] = [] if partitions is None else [static_ids[home]]

    def first_committing_producer_blocks(transactional_id: str, **config: Any) -> Any:
        producer = make_producer(transactional_id, **config)
        made.append(transactional_id)
        if not committing and transactional_id not in static_ids:
            committing.append(transactional_id)
        if committing and transactional_id == committing[0] and not blocking:
            blocking.append(BlockingSendOffsets.wrap(producer))
        return producer

    monkeypatch.setattr(transport, "transactional_producer", first_committing_producer_blocks)
    a_broker_went_down(transport)
    try:
        with hosted(app, partitions), app.sync_client() as client:
            client.start_new(doubler, 21, instance_id="s")
            assert client.wait_for_completion("s", timeout=60.0) == 42
    finally:
        for b in blocking:
            b.release.set()
    assert blocking and len(blocking[0].threads) == 1, made
    assert made.count(committing[0]) == 2, made  # replaced after the give-up
    if other is not None:
        assert made.count(other) == 2, made  # replaced with it

    statuses = [
        decode_status(value).runtime_status
        for key, value in read_topic(transport, topics.status)
        if key == b"s" and value is not None
    ]
    assert statuses.count(RuntimeStatus.COMPLETED) == 1
    tasks = [key for key, _ in read_topic(transport, topics.activities) if key == b"s"]
    assert len(tasks) == 1, "the aborted batch's activity task became visible"
    app.close()
