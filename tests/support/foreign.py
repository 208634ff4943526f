"""What other services do to a task hub: raw records, ids chosen for a partition."""

from __future__ import annotations

import itertools

import durafka
from durafka.partitioning import partition_for
from durafka.transport.limits import Headers


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
) -> None:
    """One record as another service would produce it (any bytes, up to 1 MiB)."""
    # A producer configured up to the broker's default topic limit, not librdkafka's.
    producer = app.transport.producer(**{"message.max.bytes": "1048576"})
    try:
        producer.produce(topic, partition, key, value, headers=headers)
        assert producer.flush(30) == 0
    finally:
        producer.close()
