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

    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int | None) -> None:
        """Apply ``changes`` (None = delete) and set the changelog offset, atomically.

        ``changelog_offset`` is the offset *after* the last changelog record these
        changes came from (the next offset restore would read), or None to keep it.
        """
        ...

    def changelog_offset(self) -> int | None:
        """The stored checkpoint (next changelog offset to restore from), None if empty."""
        ...

    def close(self) -> None: ...


class StoreFactory(Protocol):
    """Opens the store of one partition (RocksDB under ``state_dir``, or in memory)."""

    def open(self, hub: str, partition: int) -> PartitionStore: ...
