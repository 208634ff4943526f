"""Reading a whole topic as the outside world sees it: committed records only, to the end."""

from __future__ import annotations

import time

from durafka.transport.base import TopicPartition, Transport

__all__ = ["read_topic"]


def read_topic(
    transport: Transport, topic: str, *, timeout: float = 60.0
) -> list[tuple[bytes | None, bytes | None]]:
    """Every committed record of ``topic`` as ``(key, value)``, partition by partition in order.

    The consumer is read_committed: records of aborted transactions (a failed
    commit, a killed processor) never appear, and the end (the high watermark
    read first) is reached only once no transaction is open on the topic any more.

    Raises:
        AssertionError: the end was not reached within ``timeout`` seconds.
    """
    tps = [TopicPartition(topic, p) for p in range(transport.partition_count(topic))]
    consumer = transport.consumer(None)
    try:
        ends = {tp: consumer.watermarks(tp)[1] for tp in tps}
        consumer.assign(dict.fromkeys(tps))
        by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout:g}s")
            for record in consumer.poll_batch(1000, 0.2):
                p = record.partition()
                assert p is not None
                by_partition.setdefault(p, []).append((record.key(), record.value()))
        return [kv for p in sorted(by_partition) for kv in by_partition[p]]
    finally:
        consumer.close()
