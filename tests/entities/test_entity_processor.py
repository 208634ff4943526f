"""The processor's entity logic on a memory store: operations, queues and the lock protocol."""

from __future__ import annotations

import json
from typing import Any

import pytest

import durafka
from durafka.codec.records import (
    EntityRecord,
    decode_dead_letter,
    decode_entity,
    decode_message,
)
from durafka.deadletters import DeadLetters
from durafka.entities import DELETE_OPERATION
from durafka.processor.batch import Outbox, OwnedPartition, PartitionBatch
from durafka.processor.entities import EntityProcessor, open_lock
from durafka.processor.poison import PoisonSources
from durafka.processor.rejects import Rejects
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import entity_key
from durafka.state.memory import MemoryStore
from durafka.state.transaction import StoreTransaction
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord
from durafka.transport.limits import RecordLimits

K = EventKind
A, B, C = "@Counter@a", "@Counter@b", "@Counter@c"


class Counter(durafka.Entity[int]):
    def add(self, amount: int) -> None:
        self.state += amount

    def get(self) -> int:
        return self.state


class Bag(durafka.Entity[str]):
    """An entity whose state grows by what it is given."""

    def put(self, text: str) -> None:
        self.state += text

    def size(self) -> int:
        return len(self.state)

    def echo(self, text: str) -> str:
        return text


class Harness:
    """One EntityProcessor over one partition store; what it sends is in the batch's output."""

    def __init__(self, *, max_record_bytes: int = 1_000_000, max_payload_bytes: int = 1000) -> None:
        registry = Registry()
        registry.add_entity(Counter)
        registry.add_entity(Bag)
        self.store = MemoryStore()
        topics = HubTopics("h")
        self.dead_letters = DeadLetters(topics, 1, max_record_bytes, "test")
        self.processor = EntityProcessor(
            registry,
            topics,
            Outbox(topics, 1, 1).send,
            Rejects(topics, self.dead_letters, 1, PoisonSources()),
            max_payload_bytes=max_payload_bytes,
            limits=RecordLimits({"message.max.bytes": max_record_bytes}),
        )
        self.batch = self._new_batch()

    def _new_batch(self) -> PartitionBatch:
        return PartitionBatch(OwnedPartition(0, self.store, 0), 1_000, StoreTransaction(self.store))

    @property
    def sent(self) -> list[tuple[str, HistoryEvent]]:
        """The messages the current batch sends to instances and entities."""
        return [
            decode_message(r.value or b"") for r in self.batch.out if r.topic == "h.orchestrations"
        ]

    @property
    def published(self) -> list[OutgoingRecord]:
        """The entity records the current batch publishes on ``H.entities``."""
        return [r for r in self.batch.out if r.topic == "h.entities"]

    def deliver(self, entity: str, *events: HistoryEvent) -> list[tuple[str, HistoryEvent]]:
        """Process ``events`` for ``entity`` in one batch and commit it; what was sent."""
        self.batch = self._new_batch()
        self.processor.process(self.batch, entity, list(events))
        self.batch.tx.prepare()
        self.batch.tx.complete(None)
        return self.sent

    def record(self, entity: str) -> EntityRecord | None:
        raw = self.store.get(entity_key(entity))
        return None if raw is None else decode_entity(raw)


def op(name: str, value: Any = None, *, caller: str | None = None, seq: int = -1) -> HistoryEvent:
    payload = None if value is None else json.dumps(value).encode()
    return HistoryEvent(
        K.ENTITY_OPERATION, 0, seq=seq, name=name, payload=payload, instance_id=caller
    )


def lock(owner: str, *ids: str, seq: int = 0) -> HistoryEvent:
    return HistoryEvent(
        K.LOCK_REQUESTED, 0, seq=seq, payload=json.dumps(sorted(ids)).encode(), instance_id=owner
    )


def release(owner: str, *chain: str) -> HistoryEvent:
    payload = json.dumps(sorted(chain)).encode() if chain else None
    return HistoryEvent(K.LOCK_RELEASED, 0, payload=payload, instance_id=owner)


def kinds(sent: list[tuple[str, HistoryEvent]]) -> list[tuple[str, EventKind, str | None]]:
    return [(target, e.kind, e.instance_id) for target, e in sent]


def test_operations_update_state_respond_to_callers_and_publish() -> None:
    h = Harness()
    sent = h.deliver(
        A, op("add", 2), op("add", 3, caller="o1", seq=7), op("get", caller="o1", seq=8)
    )
    assert kinds(sent) == [("o1", K.ENTITY_RESPONSE, A), ("o1", K.ENTITY_RESPONSE, A)]
    assert [e.seq for _, e in sent] == [7, 8]
    assert sent[1][1].payload == b"5"
    rec = h.record(A)
    assert rec is not None and rec.state == b"5" and rec.last_modified_at == 1_000
    [(topic, partition, key, value, _)] = h.published
    assert (topic, partition, key) == ("h.entities", 0, A.encode())
    assert value is not None and decode_entity(value).state == b"5"


def test_a_read_only_batch_writes_nothing() -> None:
    h = Harness()
    h.deliver(A, op("add", 1))
    h.deliver(A, op("get", caller="o", seq=0))
    assert h.published == []


def test_a_failing_signal_is_counted_and_a_failing_call_answered() -> None:
    h = Harness()
    h.deliver(A, op("add", 1))
    sent = h.deliver(A, op("add", "x"), op("nope", caller="o", seq=3))
    [(target, response)] = sent
    assert target == "o" and response.failure is not None
    rec = h.record(A)
    assert rec is not None and rec.state == b"1" and rec.error_count == 2
    assert rec.last_error is not None and "nope" in rec.last_error.message


def test_an_unregistered_entity_fails_its_calls_but_can_be_locked_and_deleted() -> None:
    h = Harness()
    sent = h.deliver("@Other@x", op("go", caller="o", seq=1), lock("o", "@Other@x"))
    assert (
        sent[0][1].failure is not None and "no entity named 'Other'" in sent[0][1].failure.message
    )
    assert sent[1][1].kind is K.LOCK_GRANTED
    h.deliver("@Other@x", release("o"), op(DELETE_OPERATION))
    assert h.record("@Other@x") is None


def test_a_lock_travels_in_order_and_is_granted_by_the_last_entity() -> None:
    h = Harness()
    [(target, forward)] = h.deliver(A, lock("o1", B, A, C, seq=4))
    assert (target, forward.kind, forward.instance_id, forward.seq) == (
        B,
        K.LOCK_REQUESTED,
        "o1",
        4,
    )
    assert kinds(h.deliver(B, forward)) == [(C, K.LOCK_REQUESTED, "o1")]
    [(owner, grant)] = h.deliver(C, lock("o1", A, B, C, seq=4))
    assert (owner, grant.kind, grant.seq, grant.instance_id) == ("o1", K.LOCK_GRANTED, 4, C)
    for entity in (A, B, C):
        rec = h.record(entity)
        assert rec is not None and rec.locked_by == "o1" and rec.state is None


def test_a_locked_entity_runs_only_the_holder_and_queues_the_rest_in_order() -> None:
    h = Harness()
    h.deliver(A, lock("o1", A))
    sent = h.deliver(
        A,
        op("add", 1),  # a signal from outside: waits
        op("add", 10, caller="o2", seq=0),  # another orchestration: waits
        lock("o3", A, seq=5),  # another lock: waits
        op("add", 100, caller="o1", seq=1),  # the holder: runs now
        op("add", 1000, caller="o3", seq=6),  # o3's call after its lock request: waits
    )
    assert kinds(sent) == [("o1", K.ENTITY_RESPONSE, A)]
    rec = h.record(A)
    assert rec is not None and rec.state == b"100" and len(rec.queue) == 4

    # Releasing runs the queue in order until o3's request locks the entity again;
    # o3's own call then runs, as o3 holds the lock.
    sent = h.deliver(A, release("o1"))
    assert kinds(sent) == [
        ("o2", K.ENTITY_RESPONSE, A),
        ("o3", K.LOCK_GRANTED, A),
        ("o3", K.ENTITY_RESPONSE, A),
    ]
    rec = h.record(A)
    assert rec is not None and rec.state == b"1111" and rec.locked_by == "o3" and rec.queue == []


def test_a_release_that_follows_the_request_path_stops_where_the_request_waits() -> None:
    h = Harness()
    h.deliver(B, lock("o2", B))  # o2 holds b
    h.deliver(A, lock("o1", A, B))  # o1 holds a, its request waits at b
    h.deliver(B, lock("o1", A, B))
    rec_b = h.record(B)
    assert rec_b is not None and [q.instance_id for q in rec_b.queue] == ["o1"]

    # o1 ended before the grant: the release follows the request from a.
    sent = h.deliver(A, release("o1", A, B))
    assert kinds(sent) == [(B, K.LOCK_RELEASED, "o1")]
    assert h.record(A) is None  # unlocked, no state: nothing left to store
    assert h.deliver(B, sent[0][1]) == []  # the waiting request is dropped, not forwarded
    rec_b = h.record(B)
    assert rec_b is not None and rec_b.locked_by == "o2" and rec_b.queue == []
    # A release for a lock never seen changes nothing.
    assert h.deliver(C, release("o9", C)) == []


def test_a_chained_release_unlocks_every_entity_in_turn() -> None:
    h = Harness()
    for entity in (A, B):
        h.deliver(entity, lock("o1", A, B))
    sent = h.deliver(A, release("o1", A, B))
    assert kinds(sent) == [(B, K.LOCK_RELEASED, "o1")]
    assert h.deliver(B, sent[0][1]) == []
    assert h.record(A) is None and h.record(B) is None


def test_deleting_a_locked_entity_keeps_its_lock() -> None:
    h = Harness()
    h.deliver(A, op("add", 5), lock("o1", A))
    h.deliver(A, op(DELETE_OPERATION, caller="o1", seq=1))
    rec = h.record(A)
    assert rec is not None and rec.state is None and rec.locked_by == "o1"
    h.deliver(A, release("o1"))
    assert h.record(A) is None
    assert h.published == [OutgoingRecord("h.entities", 0, A.encode(), None)]


def test_open_lock_and_release_of_ended_orchestrations() -> None:
    request = HistoryEvent(K.LOCK_REQUESTED, 0, seq=2, payload=json.dumps([A, B]).encode())
    grant = HistoryEvent(K.LOCK_GRANTED, 0, seq=2)
    done = HistoryEvent(K.LOCK_RELEASED, 0, seq=5, payload=json.dumps([A, B]).encode())
    assert open_lock([]) is None
    assert open_lock([request]) == ([A, B], False)
    assert open_lock([request, grant]) == ([A, B], True)
    assert open_lock([request, grant, done]) is None

    h = Harness()
    h.processor.release_locks(h.batch, "o1", [request, grant])
    assert [(t, e.payload) for t, e in h.sent] == [(A, None), (B, None)]
    h.batch = h._new_batch()
    h.processor.release_locks(h.batch, "o1", [request])
    assert [(t, json.loads(e.payload or b"")) for t, e in h.sent] == [(A, [A, B])]


def test_entity_actions_become_messages() -> None:
    h = Harness()
    ids = json.dumps([A, B]).encode()
    for action in [
        HistoryEvent(K.ENTITY_CALLED, 0, seq=1, name="add", payload=b"1", instance_id=A),
        HistoryEvent(K.ENTITY_SIGNALED, 0, seq=2, name="add", payload=b"2", instance_id=B),
        HistoryEvent(K.LOCK_REQUESTED, 0, seq=3, payload=ids),
        HistoryEvent(K.LOCK_RELEASED, 0, seq=4, payload=ids),
    ]:
        h.processor.route_action(h.batch, "o1", "x:0", action)
    assert [(t, e.kind, e.seq, e.instance_id) for t, e in h.sent] == [
        (A, K.ENTITY_OPERATION, 1, "o1"),
        (B, K.ENTITY_OPERATION, -1, "o1"),  # a signal: no response wanted
        (A, K.LOCK_REQUESTED, 3, "o1"),
        (A, K.LOCK_RELEASED, 4, "o1"),
        (B, K.LOCK_RELEASED, 4, "o1"),
    ]


def test_a_failed_store_takes_back_what_the_entity_sent_and_refuses_its_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()
    batch = h.batch
    batch.emit(OutgoingRecord("h.other", 0, b"k", b"kept"), "o")

    def broken_store(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(h.processor, "_store", broken_store)
    h.processor.process(batch, A, [op("add", 1, caller="o", seq=1), op("add", 2)])
    assert batch.out[0] == OutgoingRecord("h.other", 0, b"k", b"kept")
    # Both messages are dead-lettered; only the caller's answer was sent (an error).
    assert [r.topic for r in batch.out[1:]] == [
        "h.dead-letters",
        "h.orchestrations",
        "h.dead-letters",
    ]
    assert h.dead_letters.count == 2
    [(target, response)] = h.sent
    assert (target, response.kind, response.seq) == ("o", K.ENTITY_RESPONSE, 1)
    assert response.failure is not None and "RuntimeError: bug" in response.failure.message


def dead_letter_reasons(h: Harness) -> list[str]:
    return [
        decode_dead_letter(r.value or b"")["reason"]
        for r in h.batch.out
        if r.topic == "h.dead-letters"
    ]


def test_a_malformed_lock_request_is_refused_alone() -> None:
    h = Harness()
    bad = HistoryEvent(K.LOCK_REQUESTED, 0, seq=4, payload=b"[1, 2", instance_id="o9")
    sent = h.deliver(A, op("add", 5), bad, op("add", 7))
    rec = h.record(A)
    assert rec is not None and rec.state == b"12" and rec.locked_by is None
    [reason] = dead_letter_reasons(h)
    assert "LOCK_REQUESTED" in reason and "not a JSON list" in reason
    # The owner named in the request is told (it waits for a grant).
    [(target, grant)] = sent
    assert (target, grant.kind, grant.seq) == ("o9", K.LOCK_GRANTED, 4)
    assert grant.failure is not None


def test_a_message_that_raises_is_undone_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    h.deliver(A, lock("o1", A), op("add", 1, caller="o2", seq=0))  # o2's call waits
    original = EntityProcessor._execute

    def flaky(self: EntityProcessor, run: Any, ev: HistoryEvent) -> None:
        if ev.instance_id == "o2":
            original(self, run, ev)  # changes the state and sends, then fails
            raise RuntimeError("bug after the operation")
        original(self, run, ev)

    monkeypatch.setattr(EntityProcessor, "_execute", flaky)
    sent = h.deliver(A, release("o1"), op("add", 10))
    rec = h.record(A)
    # o2's queued call is undone (state, response) and refused; the rest applies.
    assert rec is not None and rec.state == b"10" and rec.queue == [] and rec.locked_by is None
    [(target, response)] = sent
    assert target == "o2" and response.failure is not None
    assert "bug after the operation" in response.failure.message
    [reason] = dead_letter_reasons(h)
    assert "ENTITY_OPERATION" in reason


def test_messages_an_entity_cannot_apply_are_dead_lettered() -> None:
    h = Harness()
    h.deliver(
        A,
        HistoryEvent(K.EVENT_RAISED, 0, name="x"),
        op("add", 1),
        HistoryEvent(K.LOCK_RELEASED, 0, payload=b"{", instance_id="o"),
    )
    h.deliver("@Other@x", op("go"))  # a signal to an unregistered entity
    assert h.record("@Other@x") is None  # nothing stored for it
    assert h.dead_letters.count == 3
    rec = h.record(A)
    assert rec is not None and rec.state == b"1"


def test_a_corrupt_entity_record_refuses_messages_until_deleted() -> None:
    h = Harness()
    h.store.write({entity_key(A): b"garbage"}, None)
    sent = h.deliver(A, op("add", 1), op("get", caller="o", seq=2))
    assert h.store.get(entity_key(A)) == b"garbage"
    [(target, response)] = sent
    assert target == "o" and response.failure is not None
    assert "quarantined" in response.failure.message
    assert len(dead_letter_reasons(h)) == 2
    h.deliver(A, op(DELETE_OPERATION))
    assert h.store.get(entity_key(A)) is None
    [letter] = [
        decode_dead_letter(r.value or b"") for r in h.batch.out if r.topic == "h.dead-letters"
    ]
    assert (letter["source_topic"], letter["key"], letter["value"]) == (
        "h.state-changelog",
        entity_key(A),
        b"garbage",
    )
    h.deliver(A, op("add", 3))
    rec = h.record(A)
    assert rec is not None and rec.state == b"3"


# -- an entity's record must fit in one Kafka record --------------------------------------

#: The record size limit of the harness below: an entity may take 40,000 less the room
#: kept for its last error (durafka.processor.entities.RESERVE, 16,384).
SMALL = 40_000
B_ = "@Bag@b"


def test_a_call_whose_new_state_would_not_fit_fails_and_is_rolled_back() -> None:
    h = Harness(max_record_bytes=SMALL, max_payload_bytes=SMALL)
    h.deliver(B_, op("put", "x" * 15_000))
    [(_, response)] = h.deliver(B_, op("put", "y" * 15_000, caller="o", seq=1))
    assert response.failure is not None
    assert response.failure.error_type == "durafka.errors.RecordTooLargeError"
    assert "would make entity @Bag@b too large" in response.failure.message
    assert "new state of 30,002 bytes" in response.failure.message
    rec = h.record(B_)
    assert rec is not None and rec.state == json.dumps("x" * 15_000).encode()


def test_a_result_too_large_for_its_response_fails_the_call() -> None:
    h = Harness(max_record_bytes=SMALL, max_payload_bytes=100_000)
    h.deliver(B_, op("put", "x" * 15_000))
    [(_, response)] = h.deliver(B_, op("size", caller="o", seq=2))
    assert response.failure is None  # a small result is fine
    # The caller's response would be larger than a record: the call fails.
    [(_, response)] = h.deliver(B_, op("echo", "e" * 50_000, caller="o", seq=3))
    assert response.failure is not None
    assert "the result of operation 'echo' of entity @Bag@b is 50,002 bytes" in (
        response.failure.message
    )


def test_operations_that_cannot_be_queued_behind_a_lock_never_run() -> None:
    h = Harness(max_record_bytes=SMALL, max_payload_bytes=SMALL)
    h.deliver(B_, lock("owner", B_))
    queued = h.deliver(B_, op("put", "q" * 20_000))  # fits the queue
    assert queued == []
    sent = h.deliver(
        B_, op("put", "c" * 10_000, caller="o", seq=4), op("put", "s" * 10_000), lock("o2", B_)
    )
    # The call is answered with the reason; the signal is dead-lettered whole, so it can
    # be produced again once the queue drained; the small lock request still fits.
    [(target, response)] = sent
    assert target == "o" and response.failure is not None
    assert "is locked by 'owner' and its queue is full" in response.failure.message
    [letter] = [r for r in h.batch.out if r.topic == "h.dead-letters"]
    assert letter.value is not None and b"s" * 10_000 in letter.value
    rec = h.record(B_)
    assert rec is not None and [q.kind for q in rec.queue] == [K.ENTITY_OPERATION, K.LOCK_REQUESTED]
    assert h.processor.too_large == 2
