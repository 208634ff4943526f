"""Reading an instance's history from the processor's changelog (a debugging and ops tool).

The history of an instance lives in the store of the processor that owns its
partition, and in that store's compacted changelog ``H.state-changelog``. The
changelog is co-partitioned with ``H.orchestrations``, so the instance's
history chunks (keys ``h/<id>\\0<chunk>``) are all in partition
``partition_for(id)``. :func:`read_history` scans that one partition,
read_committed, from the beginning to the high watermark taken when it starts,
keeping the latest value of each chunk key (a ``None`` value is a tombstone:
the chunk was deleted by ``continue_as_new``, a restart or a purge).

Cost: one full scan of one changelog partition per call, i.e. every store
write of every instance of that partition since the last compaction. Fine for
looking at an instance now and then; not a hot path, and not something to call
per request.
"""

from __future__ import annotations

import time

from durafka.codec.records import decode_chunk
from durafka.errors import WaitTimeoutError
from durafka.partitioning import partition_for
from durafka.runtime.history import HistoryEvent
from durafka.topology import HubTopics
from durafka.transport.base import TopicPartition, Transport

__all__ = ["HISTORY_READ_TIMEOUT", "read_history"]

#: Seconds a history read may take before it gives up (a large partition, a slow broker).
HISTORY_READ_TIMEOUT = 120.0

_MAX_RECORDS = 10_000
_POLL_TIMEOUT = 0.2


def read_history(
    transport: Transport,
    topics: HubTopics,
    instance_id: str,
    *,
    timeout: float = HISTORY_READ_TIMEOUT,
) -> list[HistoryEvent]:
    """The history of the current generation of ``instance_id``, oldest event first.

    Scans the instance's partition of ``H.state-changelog`` with its own
    manually assigned consumer (no group, nothing committed). Blocking: the
    asyncio client runs it in a thread.

    Args:
        transport: the transport of the task hub (Kafka or ``memory://``).
        topics: the task hub's topic names.
        instance_id: the instance.
        timeout: seconds the scan may take at most.

    Returns:
        The typed history events, in the order the processor appended them; an
        empty list for an unknown or purged instance.

    Raises:
        WaitTimeoutError: the scan did not reach the high watermark in time.
        TransportError: the changelog topic is missing or the broker failed.
    """
    # Imported here: the package ``durafka.processor`` loads the whole processor, which
    # a client process (e.g. a web service starting instances) has no use for.
    from durafka.state.keys import history_prefix

    changelog = TopicPartition(
        topics.changelog,
        partition_for(instance_id.encode(), transport.partition_count(topics.changelog)),
    )
    prefix = history_prefix(instance_id)
    chunks: dict[bytes, bytes | None] = {}
    consumer = transport.consumer(None)
    try:
        low, high = consumer.watermarks(changelog)
        if high <= low:
            return []
        consumer.assign({changelog: low})
        deadline = time.monotonic() + timeout
        # Done when the *position* reaches the high watermark: under exactly-once the
        # last offsets are transaction markers, which are never returned as records.
        while consumer.position(changelog) < high:
            for record in consumer.poll_batch(_MAX_RECORDS, _POLL_TIMEOUT):
                key = record.key()
                if key is not None and key.startswith(prefix):
                    chunks[key] = record.value()
            if time.monotonic() > deadline:
                raise WaitTimeoutError(
                    f"reading the history of {instance_id!r} from {changelog} did not reach "
                    f"offset {high} within {timeout}s (at {consumer.position(changelog)})"
                )
    finally:
        consumer.close()
    # Chunk numbers are zero-padded in the key, so key order is chunk order.
    return [e for key in sorted(chunks) if (v := chunks[key]) is not None for e in decode_chunk(v)]
