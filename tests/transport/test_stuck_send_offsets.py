"""A ``send_offsets_to_transaction`` that librdkafka never returns from (real broker).

After the broker was unreachable, librdkafka 2.16's ``send_offsets_to_transaction``
was seen blocking for good (its group coordinator request waits for a broker
state change that may not come: librdkafka issues 5456 and 5511; every chaos
soak with a broker kill met it about every other run). Before the fix the role
thread waited in it until the watchdog ended the process, 65 s later. Now, for a
while after a client reported trouble, the call runs on a helper thread; past its
bound the producer is given up (never touched again: destroying a client under a
call is unsafe) and the caller aborts the batch and replaces the producer.

The hang is made on demand by ``tests.support.stuck``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from durafka.errors import ProducerGivenUpError
from durafka.topology import TopicSpec
from durafka.transport import TopicPartition, open_transport
from durafka.transport.calls import calls_in_flight
from durafka.transport.kafka import KafkaTransactionalProducer, KafkaTransport
from tests.support.stuck import BlockingSendOffsets, a_broker_went_down, short_send_offsets_bound

pytestmark = pytest.mark.kafka


@pytest.fixture
def transport(kafka_bootstrap: str) -> Iterator[KafkaTransport]:
    opened = open_transport(kafka_bootstrap)
    assert isinstance(opened, KafkaTransport)
    yield opened
    opened.close()


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    short_send_offsets_bound(monkeypatch)


@pytest.mark.parametrize("trouble", ["reported", "retried"])
def test_a_send_offsets_stuck_after_trouble_is_given_up_with_its_producer(
    transport: KafkaTransport, short_bounds: None, trouble: str
) -> None:
    """``reported``: the error callback said the broker went down before the call.
    ``retried``: nothing was reported yet (librdkafka serves the callback from a
    poll), the first attempt timed out and the retry blocks (soak seed 506097)."""
    source, sink = f"stuck-in-{uuid.uuid4().hex[:8]}", f"stuck-out-{uuid.uuid4().hex[:8]}"
    transport.ensure_topics([TopicSpec(source, 1, 1), TopicSpec(sink, 1, 1)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    member = transport.consumer(group)
    member.assign({TopicPartition(source, 0): 0})
    producer = transport.transactional_producer(tid, **{"transaction.timeout.ms": 10000})
    assert isinstance(producer, KafkaTransactionalProducer)
    producer.init_transactions(30.0)
    blocking = BlockingSendOffsets.wrap(producer, time_out_first=trouble == "retried")
    if trouble == "reported":
        a_broker_went_down(transport)

    producer.begin_transaction()
    producer.produce(sink, 0, b"k", b"never committed")
    assert producer.flush(10.0) == 0
    raised: list[BaseException] = []

    def send() -> None:
        try:
            producer.send_offsets({TopicPartition(source, 0): 5}, member.group_metadata())
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=send, name="role")
    started = time.monotonic()
    caller.start()
    caller.join(20.0)
    try:
        assert not caller.is_alive(), "send_offsets did not give the stuck call up"
        assert time.monotonic() - started < 10.0
        assert blocking.threads and blocking.threads[-1] != "role"
        (error,) = raised
        assert isinstance(error, ProducerGivenUpError) and not error.fatal
        assert "did not return" in str(error)
        # Not left for the watchdog: nothing of this producer counts as in flight.
        assert not [c for c in calls_in_flight() if tid in c.what]
        # The given-up producer fails fast and is released without touching the client.
        with pytest.raises(ProducerGivenUpError, match="create a new producer"):
            producer.abort_transaction(5.0)
        producer.close()

        # Its successor fences it and aborts its transaction; then commits normally.
        successor = transport.transactional_producer(tid, **{"transaction.timeout.ms": 10000})
        successor.init_transactions(30.0)
        successor.begin_transaction()
        successor.produce(sink, 0, b"k", b"committed")
        successor.send_offsets({TopicPartition(source, 0): 7}, member.group_metadata())
        successor.commit_transaction(30.0)
        successor.close()
    finally:
        blocking.release.set()

    reader = transport.consumer(None)
    reader.assign({TopicPartition(sink, 0): 0})
    seen: list[bytes | None] = []
    deadline = time.monotonic() + 30.0
    while not seen and time.monotonic() < deadline:
        seen += [r.value() for r in reader.poll_batch(100, 0.2)]
    seen += [r.value() for r in reader.poll_batch(100, 1.0)]
    assert seen == [b"committed"]
    assert member.committed([TopicPartition(source, 0)]) == {TopicPartition(source, 0): 7}
    reader.close()
    member.close()


def test_without_trouble_send_offsets_stays_on_the_calling_thread(
    transport: KafkaTransport,
) -> None:
    """The helper thread is for the time after trouble only: the hot path keeps its one call."""
    source = f"calm-{uuid.uuid4().hex[:8]}"
    transport.ensure_topics([TopicSpec(source, 1, 1)])
    member = transport.consumer(f"g-{uuid.uuid4().hex[:8]}")
    member.assign({TopicPartition(source, 0): 0})
    producer = transport.transactional_producer(f"tx-{uuid.uuid4().hex[:8]}")
    assert isinstance(producer, KafkaTransactionalProducer)
    producer.init_transactions(30.0)
    inner = producer._producer
    calls: list[str] = []

    class Noting:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def send_offsets_to_transaction(self, *args: Any) -> None:
            calls.append(threading.current_thread().name)
            inner.send_offsets_to_transaction(*args)

    producer._producer = Noting()
    producer.begin_transaction()
    producer.send_offsets({TopicPartition(source, 0): 1}, member.group_metadata())
    producer.commit_transaction(30.0)
    assert calls == [threading.current_thread().name]
    producer._producer = inner
    producer.close()
    member.close()
