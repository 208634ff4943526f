"""What other services do to a task hub: raw records, ids chosen for a partition."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import durafka
from durafka.codec.records import encode_message
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.transport.limits import Headers


class RawRecord(NamedTuple):
    """A record as another service produces it: anything, anywhere."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


def start_message(instance_id: str, orchestration: str, payload: bytes | None) -> bytes:
    """A start record's value as another service writes it (no execution id, no policy)."""
    start = HistoryEvent(EventKind.EXECUTION_STARTED, 0, name=orchestration, payload=payload)
    return encode_message(instance_id, start)


def ids_on(partition: int, partitions: int, prefix: str, count: int) -> list[str]:
    """``count`` instance ids whose records go to ``partition`` of ``partitions``."""
    candidates = (f"{prefix}-{i}" for i in itertools.count())
    return list(
        itertools.islice(
            (c for c in candidates if partition_for(c.encode(), partitions) == partition), count
        )
    )


def produce_raw(
    app: durafka.App,
    topic: str,
    partition: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None = None,
) -> int:
    """One record as another service would produce it (any bytes, up to 1 MiB); its offset."""
    [offset] = produce_records(app, [RawRecord(topic, partition, key, value, headers)])
    return offset


def produce_records(app: durafka.App, records: list[RawRecord]) -> list[int]:
    """Produce ``records`` in order with one producer; their offsets, in the same order."""
    # A producer configured up to the broker's default topic limit, not librdkafka's.
    producer = app.transport.producer(**{"message.max.bytes": "1048576"})
    offsets: dict[int, int] = {}

    def delivered(i: int) -> Any:
        def callback(err: Any, record: Any) -> None:
            assert err is None, err
            offsets[i] = record.offset()

        return callback

    try:
        for i, r in enumerate(records):
            producer.produce(r.topic, r.partition, r.key, r.value, delivered(i), headers=r.headers)
        assert producer.flush(30) == 0
    finally:
        producer.close()
    return [offsets[i] for i in range(len(records))]
