"""A malformed key in the changelog or the store is reported, dead-lettered and deleted.

Issue 11, case 9: a key such as ``t/garbage`` in ``H.state-changelog`` killed every
restore of its partition with ``invalid literal for int() with base 10`` and no
word of which key or partition. Restore now leaves such a record out, names its
partition, offset and key, dead-letters it and deletes the key (a tombstone in
the changelog); a malformed key already in a store (restored by an older
version) is found by the timer scan and handled the same way, offset -1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import durafka
from durafka.topology import HubTopics
from durafka.transport import TopicPartition
from tests.e2e import apps
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import ids_on
from tests.support.waiting import wait_until

PARTITION = 1
#: Not t/<15-digit due>/<id>\0<seq>: each would make the timer scan raise.
IN_CHANGELOG = [b"t/garbage", b"t/000000000000001/no-sequence"]
IN_STORE = [b"t/123", b"t/000000000000002/\xff\xfe\x00x"]


def produce_to_changelog(app: durafka.App, key: bytes, value: bytes | None) -> int:
    """Write one record into the changelog as a bug or another program might; its offset."""
    offsets: list[int] = []

    def delivered(err: Any, record: Any) -> None:
        assert err is None, err
        offsets.append(record.offset())

    producer = app.transport.producer()
    try:
        producer.produce(
            HubTopics(app.settings.task_hub).changelog, PARTITION, key, value, delivered
        )
        assert producer.flush(30) == 0
    finally:
        producer.close()
    return offsets[0]


def changelog_tombstones(app: durafka.App, keys: list[bytes]) -> set[bytes]:
    consumer = app.transport.consumer(None)
    topic = HubTopics(app.settings.task_hub).changelog
    consumer.assign({TopicPartition(topic, PARTITION): None})
    found: set[bytes] = set()

    def probe() -> bool:
        for record in consumer.poll_batch(500, 0.2):
            key = record.key()
            if record.value() is None and key is not None:
                found.add(key)
        return found >= set(keys)

    try:
        wait_until(probe, timeout=60, what="tombstones of the malformed keys")
    finally:
        consumer.close()
    return found


@pytest.mark.parametrize("where", ["changelog", "store"])
def test_malformed_keys_are_dead_lettered_and_deleted_and_the_partition_runs(
    app_factory: Callable[..., durafka.App], where: str
) -> None:
    app = app_factory()
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    keys = IN_CHANGELOG if where == "changelog" else IN_STORE
    offsets = {key: produce_to_changelog(app, key, b"junk " + key) for key in IN_CHANGELOG}
    if where == "store":
        # What an older version's restore left in the store; its checkpoint is past
        # the changelog's records, which therefore are not read again.
        store = app.store_factory.open(app.settings.task_hub, PARTITION)
        store.write({key: b"junk " + key for key in IN_STORE}, max(offsets.values()) + 1)
        store.close()

    n = app.settings.partitions
    with app.running(), app.sync_client() as client:
        napping = [
            client.start_new(apps.naps, 50, instance_id=iid) for iid in ids_on(PARTITION, n, "n", 3)
        ]
        for iid in napping:
            assert client.wait_for_completion(iid, timeout=60) == "rested"
        letters = read_dead_letters(
            app.transport, app.settings.task_hub, lambda ls: len(ls) >= len(keys)
        )
        assert changelog_tombstones(app, keys) >= set(keys)

    by_key = {letter["key"]: letter for letter in letters}
    assert set(by_key) == set(keys)
    for key in keys:
        letter = by_key[key]
        assert letter["source_topic"] == topics.changelog
        assert letter["source_partition"] == PARTITION
        assert letter["source_offset"] == (offsets[key] if where == "changelog" else -1)
        assert letter["value"] == b"junk " + key
        assert "malformed timer key" in letter["reason"]
