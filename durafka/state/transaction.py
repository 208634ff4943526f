"""The per-batch store transaction: read-your-writes over a partition store.

The processor opens one :class:`StoreTransaction` per Kafka transaction. Writes
stay in the transaction (reads see them) until the Kafka commit succeeded; then
:meth:`StoreTransaction.complete` writes them to the store in one atomic batch
together with the changelog offset reached. Status machine::

    STARTED --prepare()--> PREPARED --complete(offset)--> COMPLETE
       |                      |
       +------fail()----------+-------------------------> FAILED

``prepare()`` freezes the changes (they are being produced to the changelog), a
failed or completed transaction refuses any further use.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator, Mapping
from operator import itemgetter

from durafka.errors import StoreError
from durafka.state.base import PartitionStore

__all__ = ["StoreTransaction", "TransactionStatus"]

_by_key = itemgetter(0)


class TransactionStatus(enum.Enum):
    """Where a :class:`StoreTransaction` is in its life."""

    STARTED = "started"
    """Accepts reads and writes."""
    PREPARED = "prepared"
    """Changes frozen (being produced to the changelog); reads still allowed."""
    COMPLETE = "complete"
    """Written to the store; unusable."""
    FAILED = "failed"
    """Abandoned (the Kafka transaction aborted or the store write failed); unusable."""


class StoreTransaction:
    """Pending writes of one batch over a :class:`~durafka.state.base.PartitionStore`.

    Args:
        store: the partition store read through and finally written to.
    """

    __slots__ = ("_changes", "_status", "_store")

    def __init__(self, store: PartitionStore) -> None:
        self._store = store
        self._changes: dict[bytes, bytes | None] = {}
        self._status = TransactionStatus.STARTED

    @property
    def status(self) -> TransactionStatus:
        """The current status."""
        return self._status

    @property
    def store(self) -> PartitionStore:
        """The underlying store."""
        return self._store

    @property
    def changes(self) -> Mapping[bytes, bytes | None]:
        """The dirty keys and their new values (None = deleted), in first-write order.

        A live view, not a copy: do not hold it across writes.
        """
        return self._changes

    def is_empty(self) -> bool:
        """Whether nothing was written or deleted."""
        return not self._changes

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` as this transaction sees it (pending writes first)."""
        self._check_readable()
        changes = self._changes
        if key in changes:
            return changes[key]
        return self._store.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value`` (visible to this transaction's reads at once)."""
        self._check_writable()
        self._changes[key] = value

    def delete(self, key: bytes) -> None:
        """Delete ``key``; the changelog gets a tombstone even if the key did not exist."""
        self._check_writable()
        self._changes[key] = None

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order, pending writes included.

        Pending writes are taken when iteration starts; writes made while iterating
        may or may not be seen.
        """
        self._check_readable()
        pending = sorted(
            (k, v) for k, v in self._changes.items() if v is not None and k.startswith(prefix)
        )
        return self._merge(self._store.iter_prefix(prefix), pending)

    def iter_range(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < end``, in key order, pending writes included.

        Pending writes are taken when iteration starts; writes made while iterating
        may or may not be seen.
        """
        self._check_readable()
        pending = sorted(
            (k, v) for k, v in self._changes.items() if v is not None and start <= k < end
        )
        return self._merge(self._store.iter_range(start, end), pending)

    def _merge(
        self, stored: Iterator[tuple[bytes, bytes]], pending: list[tuple[bytes, bytes]]
    ) -> Iterator[tuple[bytes, bytes]]:
        changes = self._changes
        if not changes:
            return stored
        # Stored items shadowed by a pending write or delete are dropped, so the two
        # sorted streams have disjoint keys and a plain merge keeps key order.
        visible = (item for item in stored if item[0] not in changes)
        if not pending:
            return visible
        return heapq.merge(visible, pending, key=_by_key)

    def prepare(self) -> Mapping[bytes, bytes | None]:
        """Freeze the changes (no more writes) and return them for the changelog.

        Raises:
            StoreError: the transaction is not STARTED.
        """
        self._require(TransactionStatus.STARTED, "prepare")
        self._status = TransactionStatus.PREPARED
        return self._changes

    def complete(self, changelog_offset: int | None) -> None:
        """Write the changes and the checkpoint to the store, atomically.

        Call it only after the Kafka transaction carrying the changelog records
        committed. An empty transaction still stores ``changelog_offset``.

        Args:
            changelog_offset: the changelog offset after this batch's records (the
                next offset restore would read), or None to keep the stored one.

        Raises:
            StoreError: the transaction is not PREPARED, or the store write failed
                (the transaction is then FAILED).
        """
        self._require(TransactionStatus.PREPARED, "complete")
        if self._changes or changelog_offset is not None:
            try:
                self._store.write(self._changes, changelog_offset)
            except BaseException:
                self._status = TransactionStatus.FAILED
                raise
        self._status = TransactionStatus.COMPLETE

    def fail(self) -> None:
        """Abandon the transaction: its changes are never written. Idempotent."""
        if self._status is not TransactionStatus.COMPLETE:
            self._status = TransactionStatus.FAILED

    def _check_readable(self) -> None:
        status = self._status
        if status is not TransactionStatus.STARTED and status is not TransactionStatus.PREPARED:
            raise self._misuse("read from")

    def _check_writable(self) -> None:
        if self._status is not TransactionStatus.STARTED:
            raise self._misuse("write to")

    def _require(self, status: TransactionStatus, action: str) -> None:
        if self._status is not status:
            raise self._misuse(action)

    def _misuse(self, action: str) -> StoreError:
        hint = {
            TransactionStatus.STARTED: "call prepare() first",
            TransactionStatus.PREPARED: "its changes are frozen; start a new transaction",
            TransactionStatus.COMPLETE: "it is complete; start a new transaction",
            TransactionStatus.FAILED: "it failed; start a new transaction",
        }[self._status]
        return StoreError(f"cannot {action} a {self._status.value} store transaction: {hint}")

    def __repr__(self) -> str:
        return f"StoreTransaction({self._status.value}, {len(self._changes)} changes)"
