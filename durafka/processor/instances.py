"""Instances as the processor holds them: header, history and live executor, in an LRU cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from durafka.codec.newer import written_by_newer_release
from durafka.codec.records import InstanceState, decode_chunk, decode_state
from durafka.errors import DecodeError, UnknownSchemaError
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import HistoryEvent, count_rewinds
from durafka.state.keys import history_prefix, instance_key
from durafka.state.transaction import StoreTransaction

T = TypeVar("T")


@dataclass(slots=True)
class Instance:
    """One orchestration instance loaded in the processor.

    Attributes:
        instance_id: its id.
        partition: the input partition that owns it.
        state: the header (status, history chunk count, suspended events).
        history: every history event of the current generation, in order.
        executor: the live orchestrator (None until needed, or after completion).
        status_dirty: the status changed in the current batch (publish it).
    """

    instance_id: str
    partition: int
    state: InstanceState
    history: list[HistoryEvent] = field(default_factory=list)
    executor: OrchestrationExecutor | None = None
    status_dirty: bool = False


class InstanceCache:
    """A bounded LRU of loaded instances; evicted ones are re-read and replayed on demand.

    Attributes:
        hits: :meth:`get` calls that found the instance.
        misses: :meth:`get` calls that did not.
        evictions: instances evicted by :meth:`trim`.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Instance] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, instance_id: str) -> Instance | None:
        """The cached instance, marked as recently used."""
        inst = self._items.get(instance_id)
        if inst is not None:
            self._items.move_to_end(instance_id)
            self.hits += 1
        else:
            self.misses += 1
        return inst

    def put(self, inst: Instance) -> None:
        """Add or replace an instance."""
        self._items[inst.instance_id] = inst
        self._items.move_to_end(inst.instance_id)

    def demote(self, instance_id: str) -> None:
        """Make an instance the first to evict (it finished: events for it are rare).

        Under load, finished instances would otherwise stay while the running
        ones, waiting longest for their activities, were evicted and replayed.
        """
        if instance_id in self._items:
            self._items.move_to_end(instance_id, last=False)

    def remove(self, instance_id: str) -> None:
        """Forget one instance (purged)."""
        self._items.pop(instance_id, None)

    def trim(self) -> None:
        """Evict least recently used instances beyond the capacity (after a commit)."""
        items = self._items
        while len(items) > self.capacity:
            items.popitem(last=False)
            self.evictions += 1

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget every instance of these partitions (revoked, or their batch failed)."""
        for iid in [i for i, inst in self._items.items() if inst.partition in partitions]:
            del self._items[iid]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self._items.values())


class StoredValueError(DecodeError):
    """A stored header or history chunk of an instance does not decode.

    Attributes:
        instance_id: the instance.
        key: the store key of the value.
        newer: it was written by a newer durafka release (an unknown schema
            fingerprint with a plausible body, :mod:`durafka.codec.newer`), not garbage.
    """

    def __init__(self, message: str, *, instance_id: str, key: bytes, newer: bool) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.key = key
        self.newer = newer


def _decoded(decode: Callable[[bytes], T], key: bytes, value: bytes, instance_id: str) -> T:
    try:
        return decode(value)
    except Exception as exc:  # a value that decodes into nonsense is as unusable
        newer = isinstance(exc, UnknownSchemaError) and written_by_newer_release(
            value, exc.schema, instance_id
        )
        what = "header" if key.startswith(b"i/") else "history chunk"
        raise StoredValueError(
            f"the stored {what} {key!r} of instance {instance_id!r} could not be decoded: {exc}",
            instance_id=instance_id,
            key=key,
            newer=newer,
        ) from exc


def load_instance(tx: StoreTransaction, instance_id: str, partition: int) -> Instance | None:
    """Read an instance's header and history from its partition's store.

    Raises:
        StoredValueError: the header or a history chunk does not decode.
    """
    key = instance_key(instance_id)
    raw = tx.get(key)
    if raw is None:
        return None
    state = _decoded(decode_state, key, raw, instance_id)
    history: list[HistoryEvent] = []
    for chunk_key, chunk in tx.iter_prefix(history_prefix(instance_id)):
        history.extend(_decoded(decode_chunk, chunk_key, chunk, instance_id))
    state.rewinds = count_rewinds(history)
    return Instance(instance_id, partition, state, history)
