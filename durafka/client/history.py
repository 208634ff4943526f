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

from durafka.client.changelog import read_instances
from durafka.errors import DecodeError
from durafka.partitioning import partition_for
from durafka.runtime.history import HistoryEvent
from durafka.topology import HubTopics
from durafka.transport.base import Transport

__all__ = ["HISTORY_READ_TIMEOUT", "read_history"]

#: Seconds a history read may take before it gives up (a large partition, a slow broker).
HISTORY_READ_TIMEOUT = 120.0


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
    partitions = transport.partition_count(topics.changelog)
    found = read_instances(
        transport,
        topics,
        partition_for(instance_id.encode(), partitions),
        instance_id=instance_id,
        timeout=timeout,
    )
    if not found:
        return []
    if found[0].error is not None:
        raise DecodeError(f"the history of {instance_id!r} cannot be read: {found[0].error}")
    return found[0].history
