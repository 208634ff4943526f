"""The store contract: one store per partition of ``H.orchestrations``.

The store is a cache of the compacted changelog partition with the same number:
every write the processor makes goes first to the changelog (inside the Kafka
transaction) and only after the commit into the store, atomically together with
the changelog offset reached, which is the checkpoint restore resumes from.

Key layout (bytes; made by :mod:`durafka.state.keys`, described in
docs/architecture.md, "Store keys"). A NUL byte closes every id, so that no
id's keys are a prefix of another's (ids may not contain NUL, :mod:`durafka.ids`;
the key functions refuse it too):

* ``i/<instance>\\0``                 instance header (``InstanceState``)
* ``h/<instance>\\0<chunk>``          history chunk (``chunk`` zero-padded, 8 digits)
* ``t/<due_ms>/<instance>\\0<seq>``   durable timer (``due_ms`` zero-padded, 15 digits,
  so timers sort by due time)
* ``e/<entity id>\\0``                entity record (``EntityState``)
* ``o/``                            the input offset the last transaction committed

Next to the data the store keeps its *checkpoint*: the changelog offset it is up
to date with and the checkpoint's time, a wall-clock time no later than the time
any changelog record at or after that offset was written. Compaction may drop a
tombstone once it is older than the changelog's ``delete.retention.ms``, so a
store whose checkpoint time is older than that may have missed deletions that
restore can no longer read (:mod:`durafka.state.restore` wipes it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol


class PartitionStore(Protocol):
    """A sorted key-value store for one partition."""

    def get(self, key: bytes) -> bytes | None: ...

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order."""
        ...

    def iter_range(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < end``, in key order."""
        ...

    def write(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        *,
        checkpoint_time: float | None = None,
    ) -> None:
        """Apply ``changes`` (None = delete) and set the checkpoint, atomically.

        Args:
            changes: the keys to write (None: delete).
            changelog_offset: the offset *after* the last changelog record these
                changes came from (the next offset restore would read), or None to
                keep the checkpoint as it is.
            checkpoint_time: the checkpoint's time, stored with the offset (see the
                module docstring), in seconds since the epoch; None: now, which is
                right for a batch the processor just committed.
        """
        ...

    def changelog_offset(self) -> int | None:
        """The stored checkpoint (next changelog offset to restore from), None if empty."""
        ...

    def checkpoint_time(self) -> float | None:
        """The checkpoint's time (seconds since the epoch); None: no checkpoint, or one
        written before checkpoints had a time."""
        ...

    def clear(self) -> None:
        """Delete every key and the checkpoint: restore then starts from scratch."""
        ...

    def close(self) -> None: ...


class StoreFactory(Protocol):
    """Opens, lists and deletes the stores of partitions (RocksDB under ``state_dir``, or
    in memory)."""

    def open(self, hub: str, partition: int) -> PartitionStore: ...

    def stored_partitions(self, hub: str) -> dict[int, float]:
        """The partitions of task hub ``hub`` that have a store here, each with the time
        (seconds since the epoch) it was last used."""
        ...

    def delete(self, hub: str, partition: int) -> bool:
        """Delete the store of ``partition`` unless it is open (in this process or, on
        disk, in another one). Returns whether it is gone."""
        ...
