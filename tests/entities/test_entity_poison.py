"""Entity poison: an operation path that raises loses nothing else (issue 11, case 2).

A malformed lock request produced by another service, or a bug in the processor's
entity code, used to drop every operation of the entity's batch (its state, the
responses and signals) while the offsets were committed: signals +5, a malformed
request, +7 left the state at None, and callers waited forever. Now the offending
record is dead-lettered with the reason, the entity's other operations apply, and
a caller waiting for it gets an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import durafka
from durafka.codec.records import encode_message
from durafka.processor.entities import EntityProcessor
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.topology import HubTopics, partition_for
from tests.entities import apps
from tests.entities.test_entities import wait_state
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import RawRecord, produce_records


def signal(entity: str, amount: int) -> bytes:
    event = HistoryEvent(EventKind.ENTITY_OPERATION, 0, name="add", payload=str(amount).encode())
    return encode_message(entity, event)


def test_a_malformed_lock_request_is_dead_lettered_and_the_other_operations_apply(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    counter = apps.counter("poisoned")
    eid = str(counter)
    partition = partition_for(eid.encode(), app.settings.partitions)
    malformed = encode_message(
        eid,
        HistoryEvent(EventKind.LOCK_REQUESTED, 0, seq=3, payload=b"not a json list"),
    )
    # Produced before the processor runs, so that all three are in one batch.
    offsets = produce_records(
        app,
        [
            RawRecord(topics.orchestrations, partition, eid.encode(), value)
            for value in (signal(eid, 5), malformed, signal(eid, 7))
        ],
    )
    with app.running(), app.sync_client() as client:
        wait_state(client, counter, 12)
        letters = read_dead_letters(app.transport, app.settings.task_hub)
    [letter] = [x for x in letters if x["source_topic"] == topics.orchestrations]
    assert letter["source_offset"] == offsets[1]
    assert letter["value"] == malformed
    assert "LOCK_REQUESTED" in letter["reason"] and "not a JSON list" in letter["reason"]


@pytest.fixture
def entity_bug(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Entity ``@Counter@buggy`` raises inside the processor on every message."""
    for method in ("_execute", "_lock"):
        original = getattr(EntityProcessor, method)

        def broken(self: EntityProcessor, run: Any, ev: HistoryEvent, _o: Any = original) -> None:
            if run.entity_id == "@Counter@buggy":
                raise RuntimeError("a bug in the processor")
            _o(self, run, ev)

        monkeypatch.setattr(EntityProcessor, method, broken)
    yield


@pytest.mark.parametrize("orchestration", [apps.lock_or_report, apps.call_or_report])
def test_callers_of_an_entity_whose_processing_raises_get_an_error(
    app_factory: Callable[..., durafka.App], entity_bug: None, orchestration: Any
) -> None:
    app = app_factory()
    with app.running(), app.sync_client() as client:
        iid = client.start_new(orchestration, "buggy")
        result = client.wait_for_completion(iid, timeout=60)
        other = client.start_new(orchestration, "healthy")
        assert client.wait_for_completion(other, timeout=60) in ("locked", "called")
        letters = read_dead_letters(app.transport, app.settings.task_hub)
    assert "a bug in the processor" in result
    assert result.startswith(
        "EntityLockFailed" if orchestration is apps.lock_or_report else "EntityOperationFailed"
    )
    [letter] = letters
    assert letter["key"] == b"@Counter@buggy"
    assert "a bug in the processor" in letter["reason"]
    kind = "LOCK_REQUESTED" if orchestration is apps.lock_or_report else "ENTITY_OPERATION"
    assert kind in letter["reason"]
