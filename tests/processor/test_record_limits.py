"""The pieces that keep every record within Kafka's limit, each on its own.

End to end (memory:// and the real broker): ``tests/e2e/test_limits.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from durafka.codec.records import decode_chunk, encode_chunk, encode_chunks
from durafka.errors import (
    MAX_FAILURE_MESSAGE_CHARS,
    MAX_STACK_TRACE_CHARS,
    FailureDetails,
    RecordTooLargeError,
)
from durafka.processor.batch import OwnedPartition, PartitionBatch
from durafka.processor.checkpoint import Checkpoint, CheckpointOutcome
from durafka.processor.poison import PoisonSources
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import (
    entity_key,
    history_key,
    instance_key,
    store_key_owner,
    timer_key,
)
from durafka.state.memory import MemoryStore
from durafka.state.transaction import StoreTransaction, TransactionStatus
from durafka.topology import HubTopics, load_hub_spec
from durafka.transport import TopicPartition
from durafka.transport.base import OutgoingRecord
from durafka.transport.limits import RECORD_OVERHEAD, RecordLimits
from durafka.transport.memory import MemoryBroker, MemoryTransport

# -- RecordLimits ------------------------------------------------------------------------


def test_record_limits_take_the_smaller_of_producer_and_topic() -> None:
    limits = RecordLimits(
        {"message.max.bytes": "500000"},
        {"a": {"max.message.bytes": "100061"}, "b": {}},
    )
    assert limits.of("a") == 100_000  # the topic's limit less the batch header
    assert limits.of("b") == 500_000
    assert limits.of("unknown") == 500_000
    assert limits.smallest == 100_000
    assert limits.room("a", b"key") == 100_000 - RECORD_OVERHEAD - 3
    assert limits.excess("a", b"key", b"v" * (100_000 - RECORD_OVERHEAD - 3)) == 0
    assert limits.excess("a", b"key", b"v" * (100_001 - RECORD_OVERHEAD - 3)) == 1


def test_record_limits_of_a_hub_come_from_its_topology() -> None:
    limits = RecordLimits.for_hub("h", {})
    assert limits.of(HubTopics("h").status) == 1_000_000  # librdkafka's default wins
    assert RecordLimits.for_hub("h", {"message.max.bytes": "2000000"}).of("h.status") == (
        1_048_588 - 61
    )


# -- history chunks ----------------------------------------------------------------------


def _events(n: int, payload: int = 100) -> list[HistoryEvent]:
    return [
        HistoryEvent(
            EventKind.TASK_SCHEDULED, 1_700_000_000_000, seq=i, name="a", payload=b"p" * payload
        )
        for i in range(n)
    ]


def test_a_history_that_fits_is_one_chunk_as_before() -> None:
    events = _events(10)
    assert encode_chunks(events, 1_000_000) == [encode_chunk(events)]


def test_a_history_too_large_for_one_chunk_is_split_in_order() -> None:
    events = _events(5_000)
    chunks = encode_chunks(events, 100_000)
    assert len(encode_chunk(events)) > 5 * 100_000
    assert len(chunks) == 7
    assert all(len(c) <= 100_000 for c in chunks)
    assert [e for c in chunks for e in decode_chunk(c)] == events


def test_a_single_event_larger_than_a_chunk_is_an_error_with_its_size() -> None:
    events = [*_events(2), *_events(1, payload=200_000)]
    with pytest.raises(RecordTooLargeError, match=r"TASK_SCHEDULED 'a' event .* alone is 200,0"):
        encode_chunks(events, 100_000)


# -- failure details ---------------------------------------------------------------------


def test_failure_details_are_bounded_where_they_are_made() -> None:
    try:
        raise ValueError("m" * 100_000)
    except ValueError as exc:
        details = FailureDetails.from_exception(exc)
    assert len(details.message) == MAX_FAILURE_MESSAGE_CHARS
    assert details.message.startswith("mmm")
    assert details.message.endswith("[... 92,000 more characters cut by durafka]")
    assert details.stack_trace is not None and len(details.stack_trace) == MAX_STACK_TRACE_CHARS
    # The end of a traceback says where it was raised: that is what is kept.
    assert details.stack_trace.startswith("[... ")
    assert details.stack_trace.endswith("m" * 100 + "\n")


def test_small_failure_details_are_kept_whole() -> None:
    details = FailureDetails("builtins.ValueError", "short", "trace")
    assert details.bounded() is details


# -- sources of records ------------------------------------------------------------------


def test_every_store_key_names_its_owner() -> None:
    assert store_key_owner(instance_key("a/b")) == "a/b"
    assert store_key_owner(history_key("a", 12)) == "a"
    assert store_key_owner(entity_key("@E@k")) == "@E@k"
    assert store_key_owner(timer_key(5, "t", 3)) == "t"
    assert store_key_owner(b"t/garbage") is None
    assert store_key_owner(b"x/unknown\x00") is None


def _share(number: int = 0) -> PartitionBatch:
    store = MemoryStore()
    return PartitionBatch(OwnedPartition(number, store, 0), 1_000, StoreTransaction(store))


def test_a_share_knows_whose_processing_made_each_record() -> None:
    share = _share()
    a = OutgoingRecord("h.status", 0, b"a", b"1")
    b = OutgoingRecord("h.orchestrations", 1, b"x", b"2")
    share.emit(a, "a")
    share.emit(b, "b")
    share.emit(OutgoingRecord("h.dead-letters", 0, b"k", b"3"), 7)
    assert share.source_of(b, "h.state-changelog") == "b"
    assert (
        share.source_of(
            OutgoingRecord("h.state-changelog", 0, history_key("c", 0), b""), "h.state-changelog"
        )
        == "c"
    )
    share.discard("b")
    assert share.out == [a, OutgoingRecord("h.dead-letters", 0, b"k", b"3")]
    assert share.sources == ["a", 7]
    with pytest.raises(LookupError):
        share.source_of(b, "h.state-changelog")


# -- the checkpoint refuses what cannot fit -----------------------------------------------


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    broker = MemoryBroker("limits")
    transport = MemoryTransport(broker)
    transport.ensure_topics(load_hub_spec("h", partitions=1))
    yield transport
    transport.close()


@pytest.mark.parametrize("in_headers", [False, True], ids=["value", "headers"])
def test_a_checkpoint_refuses_a_record_over_its_topic_limit_and_produces_nothing(
    transport: MemoryTransport, in_headers: bool
) -> None:
    """Headers count too (a forwarded record keeps its headers): a record too large
    only with them was refused by ``produce()`` after the records before it."""
    topics = HubTopics("h")
    consumer = transport.consumer("h.processors")
    consumer.assign({TopicPartition(topics.orchestrations, 0): 0})
    producer = transport.transactional_producer("tx")
    producer.init_transactions()
    share = _share()
    share.tx.put(instance_key("a"), b"header")
    share.emit(OutgoingRecord(topics.status, 0, b"a", b"s"), "a")
    big = (
        OutgoingRecord(topics.activities, 0, b"b", b"t", [("trace", b"t" * 30_000)])
        if in_headers
        else OutgoingRecord(topics.activities, 0, b"b", b"t" * 30_000)
    )
    share.emit(big, "b")
    share.tx.put(history_key("c", 0), b"h" * 30_000)
    checkpoint = Checkpoint(
        producer,
        [share],
        input_topic=topics.orchestrations,
        changelog_topic=topics.changelog,
        limits=RecordLimits({"message.max.bytes": "20000"}),
        group_metadata=consumer.group_metadata,
        commit_timeout=10,
    )
    assert checkpoint.commit() is CheckpointOutcome.REJECTED
    assert share.tx.status is TransactionStatus.FAILED
    refused = [
        (r.record.topic, share.source_of(r.record, topics.changelog)) for r in checkpoint.rejected
    ]
    assert refused == [(topics.activities, "b"), (topics.changelog, "c")]
    assert all(r.too_large for r in checkpoint.rejected)
    size = "30,047" if in_headers else "30,037"
    assert f"a record of {size} bytes to h.activities (key b'b') exceeds the 20,000-byte" in (
        checkpoint.rejected[0].reason
    )
    reader = transport.consumer(None)
    reader.assign({TopicPartition(t, 0): 0 for t in (topics.status, topics.changelog)})
    assert reader.poll_batch(10, 0.1) == []


# -- marks on sources --------------------------------------------------------------------


def test_a_mark_lasts_until_a_batch_that_acted_on_it_commits() -> None:
    poison = PoisonSources()
    poison.mark(0, "a", "too large", "t")
    poison.mark(0, 5, "refused", "t")
    poison.new_batch()
    assert poison.use(0, "a", "instance failed")
    assert not poison.use(0, "a", "instance failed")  # once per batch
    poison.new_batch()  # the batch failed: processed again, the marks still hold
    marks = poison.of(0)
    assert marks is not None and set(marks) == {"a", 5}
    poison.mark(0, "a", "too large again", "t")
    assert marks["a"].strikes == 2
    assert poison.use(0, "a", "input dead-lettered")
    poison.committed(0)
    marks = poison.of(0)
    assert marks is not None and set(marks) == {5}  # not acted on: kept
    poison.forget([0])
    assert poison.of(0) is None
    assert poison.refused == 3
    assert poison.outcomes == {"instance failed": 1, "input dead-lettered": 1}
