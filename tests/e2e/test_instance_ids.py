"""Instance ids are checked on every path into durafka (issue 11, case 8 and part of 5).

``start_new(..., instance_id=V + "\\x00retry")`` used to write history chunks
under ``h/<V>\\0...``, which the prefix read of instance ``V`` also matched: ``V``
then failed with a non-determinism error. The client now refuses such ids, the
processor dead-letters records of other services that carry one (or whose key is
not their instance id) before anything touches the store, and the store's key
functions refuse NUL.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

import durafka
from durafka.codec.records import encode_message
from durafka.errors import InvalidInstanceIdError
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.topology import HubTopics, partition_for
from tests.e2e import apps
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import produce_raw
from tests.support.waiting import wait_until

#: Ids no path may accept, with a word the error (or the dead letter's reason) says.
BAD_IDS = [
    ("", "empty"),
    ("x" * 257, "256"),
    ("v\x00retry", "NUL"),
    ("tab\there", "control"),
    ("@", "entity"),
    ("@no-key-separator", "entity"),
]


def neighbour_with_nul(prefix: str, partitions: int) -> str:
    """An id ``V`` whose ``V + "\\x00retry"`` goes to the same partition (and store) as ``V``."""
    for i in itertools.count():
        v = f"{prefix}-{i}"
        if partition_for(v.encode(), partitions) == partition_for(
            f"{v}\x00retry".encode(), partitions
        ):
            return v
    raise AssertionError("unreachable")


def wait_running(client: durafka.Client, iid: str) -> None:
    wait_until(
        lambda: (s := client.get_status(iid)) is not None and s.custom_status == "waiting",
        timeout=60,
        what=f"{iid} waiting for its event",
    )


def produce_start(app: durafka.App, key: bytes, instance_id: str) -> None:
    """A start record as another service might produce it: any key, any id."""
    event = HistoryEvent(EventKind.EXECUTION_STARTED, 0, name="greets_after_event", payload=b'"x"')
    topic = HubTopics(app.settings.task_hub).orchestrations
    partition = partition_for(key, app.settings.partitions)
    produce_raw(app, topic, partition, key, encode_message(instance_id, event))


def test_the_client_refuses_an_id_with_nul_so_it_cannot_corrupt_a_neighbour(
    app_factory: Callable[..., durafka.App],
) -> None:
    # cache_size=0: every step replays the history read from the store, as after a restart.
    app = app_factory(cache_size=0)
    v = neighbour_with_nul("v", app.settings.partitions)
    with app.running(), app.sync_client() as client:
        client.start_new(apps.greets_after_event, "V", instance_id=v)
        wait_running(client, v)
        with pytest.raises(InvalidInstanceIdError, match="NUL"):
            client.start_new(apps.greets_after_event, "intruder", instance_id=f"{v}\x00retry")
        client.raise_event(v, "go", "done")
        assert client.wait_for_completion(v, timeout=60) == "Hello, V! done"


def test_records_with_invalid_ids_are_dead_lettered_before_touching_the_store(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(cache_size=0)
    v = neighbour_with_nul("v", app.settings.partitions)
    intruder = f"{v}\x00retry"
    with app.running(), app.sync_client() as client:
        client.start_new(apps.greets_after_event, "V", instance_id=v)
        wait_running(client, v)
        produce_start(app, intruder.encode(), intruder)
        for bad, _ in BAD_IDS:
            produce_start(app, bad.encode(), bad)
        client.raise_event(v, "go", "done")
        assert client.wait_for_completion(v, timeout=60) == "Hello, V! done"
        letters = read_dead_letters(
            app.transport, app.settings.task_hub, lambda ls: len(ls) >= 1 + len(BAD_IDS)
        )
    by_key = {letter["key"]: letter["reason"] for letter in letters}
    assert "NUL" in by_key[intruder.encode()]
    for bad, word in BAD_IDS:
        assert word in by_key[bad.encode()], (bad, by_key[bad.encode()])


def test_a_record_whose_key_is_not_its_instance_id_is_dead_lettered(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    with app.running(), app.sync_client() as client:
        produce_start(app, b"the-key", "another-id")
        [letter] = read_dead_letters(app.transport, app.settings.task_hub)
        assert letter["key"] == b"the-key"
        assert "another-id" in letter["reason"] and "key" in letter["reason"]
        # Nothing was started under either name.
        assert client.get_status("another-id") is None
        assert client.get_status("the-key") is None
        iid = client.start_new(apps.hello_world, "after")
        assert client.wait_for_completion(iid, timeout=60) == "Hello, after!"


def test_both_clients_refuse_invalid_ids_before_writing(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    with app.sync_client() as client:
        for bad, word in BAD_IDS:
            with pytest.raises(InvalidInstanceIdError, match=word):
                client.start_new(apps.hello_world, "x", instance_id=bad)
            with pytest.raises(InvalidInstanceIdError, match=word):
                client.raise_event(bad, "go")

    async def use_async_client() -> None:
        async with app.client() as aclient:
            for bad, word in BAD_IDS:
                with pytest.raises(InvalidInstanceIdError, match=word):
                    await aclient.start_new(apps.hello_world, "x", instance_id=bad)
                with pytest.raises(InvalidInstanceIdError, match=word):
                    await aclient.terminate(bad)

    asyncio.run(use_async_client())
