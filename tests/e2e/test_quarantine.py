"""An instance whose stored state does not decode is quarantined (issue 11, case 3).

A corrupt header or history chunk made loading the instance raise; failing it
"internally" loaded it again and raised again, the processor thread died, and the
partition moved to the next processor, which restored the same changelog and died
too. Now the instance is quarantined: its stored values are dead-lettered, it is
FAILED with an ``InstanceQuarantinedError`` and the reason, the records sent to it
are dead-lettered, and its partition goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import durafka
from durafka import RuntimeStatus
from durafka.codec.records import encode_message
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import history_key, instance_key
from durafka.topology import HubTopics, partition_for
from tests.e2e import apps
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import ids_on, produce_raw

GARBAGE = b"\xc3\x01 not what durafka wrote"


@pytest.mark.parametrize("corrupt", ["header", "chunk"])
def test_an_undecodable_instance_is_quarantined_and_its_partition_goes_on(
    app_factory: Callable[..., durafka.App], corrupt: str
) -> None:
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    iid = f"victim-{corrupt}"
    partition = partition_for(iid.encode(), n)
    with app.running(), app.sync_client() as client:
        client.start_new(apps.greets_after_event, "x", instance_id=iid)
        client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=60)
    # A bug (or a disk) corrupts the stored value; the next owner restores it.
    key = instance_key(iid) if corrupt == "header" else history_key(iid, 0)
    produce_raw(app, topics.changelog, partition, key, GARBAGE)

    app = app_factory()
    event = encode_message(iid, HistoryEvent(EventKind.EVENT_RAISED, 0, name="go", payload=b'"!"'))
    with app.running(), app.sync_client() as client:
        event_offset = produce_raw(app, topics.orchestrations, partition, iid.encode(), event)
        status = client.wait_for_status(iid, timeout=60)
        # The partition goes on.
        for other in ids_on(partition, n, "after-quarantine", 3):
            client.start_new(apps.hello_world, other, instance_id=other)
            assert client.wait_for_completion(other, timeout=60) == f"Hello, {other}!"
        letters = read_dead_letters(
            app.transport, app.settings.task_hub, lambda ls: len(ls) >= 2 + (corrupt == "chunk")
        )

    assert status.runtime_status is RuntimeStatus.FAILED
    details = status.failure_details
    assert details is not None
    assert details.is_caused_by(durafka.InstanceQuarantinedError)
    assert "could not be decoded" in details.message
    if corrupt == "chunk":  # what the header knew is kept
        assert status.name == "greets_after_event"
    stored = [x for x in letters if x["source_topic"] == topics.changelog]
    assert key in {x["key"] for x in stored}
    assert {x["source_offset"] for x in stored} == {-1}
    assert next(x for x in stored if x["key"] == key)["value"] == GARBAGE
    [sent] = [x for x in letters if x["source_topic"] == topics.orchestrations]
    assert (sent["source_offset"], sent["value"]) == (event_offset, event)
    assert "quarantined" in sent["reason"]
