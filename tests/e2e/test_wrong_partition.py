"""A record of another service on the wrong partition (a client that does not hash
keys with murmur2, e.g. librdkafka's default partitioner): docs/topics.md,
"Partitioning". It used to stop the processor (the instance cached from the wrong
partition met its record on the right one: a KeyError); now it is forwarded
(tests/e2e/test_foreign_records.py has the rest).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from durafka import RuntimeStatus
from durafka.codec.records import encode_message
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.topology import HubTopics
from tests.e2e import apps
from tests.support.apps import make_app
from tests.support.foreign import produce_raw

PARTITIONS = 4


def test_a_start_on_the_wrong_partition_does_not_stop_the_processor(tmp_path: Path) -> None:
    app = make_app(
        f"memory://{uuid.uuid4().hex[:8]}",
        f"t{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        apps.app.registry,
        partitions=PARTITIONS,
    )
    iid = "misplaced"
    wrong = (partition_for(iid.encode(), PARTITIONS) + 1) % PARTITIONS
    start = HistoryEvent(
        EventKind.EXECUTION_STARTED,
        int(time.time() * 1000),
        name="greets_after_event",
        payload=b'"Ada"',
        execution_id=uuid.uuid4().hex,
    )
    try:
        with app.running(), app.sync_client() as client:
            orchestrations = HubTopics(app.settings.task_hub).orchestrations
            produce_raw(app, orchestrations, wrong, iid.encode(), encode_message(iid, start))
            client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=30)
            client.raise_event(iid, "go", "!")  # durafka's client: the right partition
            healthy = client.start_new(apps.hello_world, "after")
            assert client.wait_for_completion(healthy, timeout=10) == "Hello, after!"
            status = client.get_status(iid)
            assert status is not None and status.runtime_status is not RuntimeStatus.FAILED
    finally:
        app.close()
