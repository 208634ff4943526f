"""The in-memory partition store, for ``memory://`` runs and tests.

A dict gives O(1) reads; a sorted key list (``bisect``) gives ordered range reads.
The factory keeps every partition's data, so closing and reopening a partition
finds it again, as it would on disk, and, like RocksDB's file lock, only one open
store per partition is allowed at a time.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Mapping

from durafka.errors import StoreError

__all__ = ["MemoryStore", "MemoryStoreFactory"]

# Up to this many new or removed keys per write, fix the sorted list key by key;
# above it, one sort of the list (sorted runs: close to linear) is cheaper.
_INCREMENTAL_LIMIT = 32


class _Tables:
    """The data of one partition, shared by the successive stores opened on it."""

    __slots__ = ("checkpoint_time", "data", "keys", "last_used", "offset", "owner")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []
        self.offset: int | None = None
        self.checkpoint_time: float | None = None
        self.owner: MemoryStore | None = None
        self.last_used = time.time()


class MemoryStore:
    """A :class:`~durafka.state.base.PartitionStore` held in memory.

    ``MemoryStore()`` is a fresh, empty store; :class:`MemoryStoreFactory` opens
    stores that keep their data across close and reopen.
    """

    def __init__(self) -> None:
        self._tables = _Tables()
        self._data = self._tables.data
        self._name = "memory"
        self._closed = False

    @classmethod
    def _attach(cls, tables: _Tables, name: str) -> MemoryStore:
        store = cls()
        store._tables = tables
        store._data = tables.data
        store._name = name
        tables.owner = store
        return store

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, None if absent."""
        if self._closed:
            raise self._closed_error()
        return self._data.get(key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order."""
        if self._closed:
            raise self._closed_error()
        keys = self._tables.keys
        lo = bisect_left(keys, prefix)
        n = len(prefix)
        # Truncated to the prefix length the sorted keys stay sorted.
        hi = bisect_right(keys, prefix, lo, key=lambda k: k[:n])
        return self._items(keys[lo:hi])

    def iter_range(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < end``, in key order."""
        if self._closed:
            raise self._closed_error()
        if start >= end:
            return iter(())
        keys = self._tables.keys
        lo = bisect_left(keys, start)
        hi = bisect_left(keys, end, lo)
        return self._items(keys[lo:hi])

    def _items(self, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        # ``keys`` is a snapshot, so a write during iteration cannot shift it; a key
        # deleted meanwhile is skipped.
        data = self._data
        for key in keys:
            value = data.get(key)
            if value is not None:
                yield key, value

    def write(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        *,
        checkpoint_time: float | None = None,
    ) -> None:
        """Apply ``changes`` (None = delete) and set the checkpoint, atomically."""
        if self._closed:
            raise self._closed_error()
        if changelog_offset is not None and changelog_offset < 0:
            raise StoreError(f"invalid changelog offset {changelog_offset} for {self._name}")
        data = self._data
        added: list[bytes] = []
        removed: list[bytes] = []
        for key, value in changes.items():
            if value is None:
                if data.pop(key, None) is not None:
                    removed.append(key)
            else:
                if key not in data:
                    added.append(key)
                data[key] = value
        if added or removed:
            self._reindex(added, removed)
        if changelog_offset is not None:
            self._tables.offset = changelog_offset
            self._tables.checkpoint_time = (
                time.time() if checkpoint_time is None else checkpoint_time
            )

    def _reindex(self, added: list[bytes], removed: list[bytes]) -> None:
        keys = self._tables.keys
        if len(added) + len(removed) <= _INCREMENTAL_LIMIT:
            for key in removed:
                del keys[bisect_left(keys, key)]
            for key in added:
                insort(keys, key)
            return
        if removed:
            gone = set(removed)
            keys = [k for k in keys if k not in gone]
        added.sort()
        keys.extend(added)
        keys.sort()
        self._tables.keys = keys

    def changelog_offset(self) -> int | None:
        """The stored checkpoint (next changelog offset to restore from), None if never set."""
        if self._closed:
            raise self._closed_error()
        return self._tables.offset

    def checkpoint_time(self) -> float | None:
        """The checkpoint's time (seconds since the epoch), None if never set."""
        if self._closed:
            raise self._closed_error()
        return self._tables.checkpoint_time

    def clear(self) -> None:
        """Delete every key and the checkpoint."""
        if self._closed:
            raise self._closed_error()
        tables = self._tables
        tables.data.clear()
        tables.keys = []
        tables.offset = None
        tables.checkpoint_time = None

    def close(self) -> None:
        """Release the partition; idempotent. The data stays with the factory."""
        if self._closed:
            return
        self._closed = True
        if self._tables.owner is self:
            self._tables.owner = None
            self._tables.last_used = time.time()

    def _closed_error(self) -> StoreError:
        return StoreError(f"the memory store {self._name} is closed")

    def __repr__(self) -> str:
        return f"MemoryStore({self._name!r})"


class MemoryStoreFactory:
    """Opens in-memory stores that survive close and reopen within this factory.

    Args:
        lock_timeout: seconds :meth:`open` waits for a store of the same partition,
            still open elsewhere (e.g. a processor finishing its revocation), to close.
    """

    def __init__(self, *, lock_timeout: float = 10.0) -> None:
        self.lock_timeout = lock_timeout
        self._tables: dict[tuple[str, int], _Tables] = {}
        self._lock = threading.Lock()

    def open(self, hub: str, partition: int) -> MemoryStore:
        """Open the store of ``partition`` of task hub ``hub``.

        Raises:
            StoreError: another store of this partition is still open after
                ``lock_timeout``.
        """
        name = f"{hub}/{partition}"
        deadline = time.monotonic() + self.lock_timeout
        while True:
            with self._lock:
                tables = self._tables.setdefault((hub, partition), _Tables())
                if tables.owner is None:
                    # The factory and the store are one unit (this module).
                    return MemoryStore._attach(tables, name)  # noqa: SLF001
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreError(
                    f"the memory store {name} is still open after {self.lock_timeout:g}s: "
                    f"another owner holds this partition; close it first"
                )
            time.sleep(min(remaining, 0.01))

    def drop(self, hub: str, partition: int) -> None:
        """Forget a partition's data, like deleting its state directory."""
        with self._lock:
            self._tables.pop((hub, partition), None)

    def stored_partitions(self, hub: str) -> dict[int, float]:
        """Partitions of ``hub`` with a store, and when each was last closed (open: now)."""
        now = time.time()
        with self._lock:
            return {
                p: now if tables.owner is not None else tables.last_used
                for (h, p), tables in self._tables.items()
                if h == hub
            }

    def delete(self, hub: str, partition: int) -> bool:
        """Forget the store of ``partition`` unless it is open; whether it is gone."""
        with self._lock:
            tables = self._tables.get((hub, partition))
            if tables is not None and tables.owner is not None:
                return False
            self._tables.pop((hub, partition), None)
            return True
