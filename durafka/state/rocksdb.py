"""The on-disk partition store: one RocksDB database per partition (rocksdict, raw bytes).

Layout: one column family holding the user keys (see :mod:`durafka.state.base`) and
one reserved key, :data:`CHANGELOG_OFFSET_KEY`, holding the checkpoint: the offset
(8 bytes, big-endian) and the checkpoint's time in milliseconds (8 bytes; absent
in stores written before checkpoints had a time). The checkpoint is written in the
same ``WriteBatch`` as the data it describes, so after any crash the stored offset
and the stored data agree, whatever RocksDB lost.

Iterators are read in bounded chunks, each from a fresh RocksDB iterator that is
dropped before anything is yielded: a live rocksdict iterator keeps the database
(and its file lock) open after :meth:`RocksDBStore.close`, and a caller abandoning
a generator half-way must never stop the next owner of the partition from opening it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from durafka.errors import StoreError

__all__ = ["CHANGELOG_OFFSET_KEY", "RocksDBStore", "RocksDBStoreFactory"]

logger = logging.getLogger(__name__)

CHANGELOG_OFFSET_KEY = b"\x00changelog-offset"
"""Reserved key of the checkpoint; sorts before every user key and is never iterated."""

# Items read per RocksDB iterator. Most prefix reads (one instance's history) fit in one.
_ITER_CHUNK = 256
_LOCK_RETRY_FIRST = 0.01
_LOCK_RETRY_MAX = 0.25


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    # Many partitions may be open in one process: keep each database small in memory.
    options.set_write_buffer_size(16 * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    options.set_keep_log_file_num(2)
    return options


def _is_lock_error(exc: Exception) -> bool:
    # rocksdict raises a plain Exception carrying RocksDB's status text, e.g.
    # "IO error: While lock file: <path>/LOCK: Resource temporarily unavailable"
    # (another process) or "... lock hold by current process ..." (this one).
    return "lock" in str(exc).lower()


class RocksDBStore:
    """A :class:`~durafka.state.base.PartitionStore` backed by RocksDB.

    Args:
        path: the database directory (created if missing).
        lock_timeout: seconds to keep retrying while another owner (a process or a
            thread still closing the partition) holds the database lock.
        disable_wal: skip RocksDB's write-ahead log. The changelog is the durable
            copy, so this is safe: a crash then loses the writes since the last
            memtable flush, together with their checkpoint (one batch holds both),
            and restore re-reads that stretch of the changelog. The default keeps
            the WAL, which costs one unsynced file write per batch and makes a
            killed process restart without re-reading anything.

    Raises:
        StoreError: the database could not be opened (lock still held after
            ``lock_timeout``, corruption, permissions); the message names the path.
    """

    def __init__(self, path: Path, lock_timeout: float = 10.0, *, disable_wal: bool = False):
        self._path = Path(path)
        self._closed = False
        self._lock_timeout = lock_timeout
        self._disable_wal = disable_wal
        self._db = self._open(lock_timeout)

    @property
    def path(self) -> Path:
        """The database directory."""
        return self._path

    def _open(self, lock_timeout: float) -> Rdict:
        db = self._open_locked(lock_timeout)
        if self._disable_wal:
            write_options = WriteOptions()
            # A property at runtime, although rocksdict's stub declares a method.
            write_options.disable_wal = True  # type: ignore[method-assign, assignment]
            db.set_write_options(write_options)
        return db

    def _open_locked(self, lock_timeout: float) -> Rdict:
        options = _options()
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {self._path}: {exc}") from exc

        deadline = time.monotonic() + lock_timeout
        delay = _LOCK_RETRY_FIRST
        attempts = 0
        while True:
            attempts += 1
            try:
                return Rdict(str(self._path), options)
            except Exception as exc:
                if not _is_lock_error(exc):
                    raise StoreError(
                        f"cannot open the RocksDB store at {self._path}: {exc}"
                    ) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(
                        f"the RocksDB store at {self._path} is still locked after "
                        f"{lock_timeout:g}s ({attempts} attempts): another process or "
                        f"thread owns this partition; stop it or wait for it to release "
                        f"the partition. RocksDB said: {exc}"
                    ) from exc
                if attempts == 1:
                    logger.info(
                        "state store %s is locked, retrying for %.1fs", self._path, remaining
                    )
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, _LOCK_RETRY_MAX)

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, None if absent."""
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:
            raise self._error("read", exc) from exc
        return value

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order."""
        end = _prefix_end(prefix)
        if end is None and prefix:
            # Only an all-0xff prefix has no upper bound: filter it by hand.
            return (item for item in self._scan(prefix, None) if item[0].startswith(prefix))
        return self._scan(prefix, end)

    def iter_range(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < end``, in key order."""
        if start >= end:
            return iter(())
        return self._scan(start, end)

    def _scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        covers_offset_key = start <= CHANGELOG_OFFSET_KEY
        if end is not None:
            covers_offset_key = covers_offset_key and end > CHANGELOG_OFFSET_KEY
        read_options = ReadOptions()
        if end is not None:
            # The bound lets RocksDB stop at the range end instead of reading past it.
            read_options.set_iterate_upper_bound(end)
        cursor = start
        while True:
            try:
                # Raw mode: keys and values are bytes (the stub types them loosely).
                items = self._db.items(from_key=cursor, read_opt=read_options)
                chunk = cast(list[tuple[bytes, bytes]], list(islice(items, _ITER_CHUNK)))
                del items  # release the RocksDB iterator before yielding
            except Exception as exc:
                raise self._error("iterate", exc) from exc
            if covers_offset_key:
                yield from (item for item in chunk if item[0] != CHANGELOG_OFFSET_KEY)
            else:
                yield from chunk
            if len(chunk) < _ITER_CHUNK:
                return
            # The smallest key after the last one read.
            cursor = chunk[-1][0] + b"\x00"

    def write(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        *,
        checkpoint_time: float | None = None,
    ) -> None:
        """Apply ``changes`` (None = delete) and set the checkpoint in one atomic batch.

        See :meth:`durafka.state.base.PartitionStore.write`.

        Raises:
            StoreError: a change names the reserved checkpoint key, the offset is
                negative, or RocksDB failed (the batch is then not applied at all).
        """
        if CHANGELOG_OFFSET_KEY in changes:
            raise StoreError(f"key {CHANGELOG_OFFSET_KEY!r} is reserved for the changelog offset")
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            if changelog_offset < 0:
                raise StoreError(f"invalid changelog offset {changelog_offset} for {self._path}")
            batch.put(CHANGELOG_OFFSET_KEY, _checkpoint_value(changelog_offset, checkpoint_time))
        if batch.is_empty():
            return
        try:
            self._db.write(batch)
        except Exception as exc:
            raise self._error("write", exc) from exc

    def changelog_offset(self) -> int | None:
        """The stored checkpoint (next changelog offset to restore from), None if never set."""
        raw = self.get(CHANGELOG_OFFSET_KEY)
        return None if raw is None else int.from_bytes(raw[:8], "big")

    def checkpoint_time(self) -> float | None:
        """The checkpoint's time (seconds since the epoch); None: none, or an old store's."""
        raw = self.get(CHANGELOG_OFFSET_KEY)
        if raw is None or len(raw) < 16:
            return None
        return int.from_bytes(raw[8:16], "big") / 1000

    def clear(self) -> None:
        """Delete the database (every key and the checkpoint) and start an empty one.

        Raises:
            StoreError: the database could not be deleted or opened again.
        """
        if self._closed:
            raise self._error("clear", RuntimeError("closed"))
        try:
            self._db.close()
            Rdict.destroy(str(self._path), _options())
        except Exception as exc:
            self._closed = True
            raise self._error("clear", exc) from exc
        self._db = self._open(self._lock_timeout)

    def close(self) -> None:
        """Flush the memtable and release the database lock; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            # close() flushes the memtable: the next open needs no WAL replay and, with
            # the WAL disabled, loses nothing.
            self._db.close()
        except Exception as exc:
            raise self._error("close", exc) from exc

    def _error(self, action: str, exc: Exception) -> StoreError:
        if self._closed:
            return StoreError(f"cannot {action} the RocksDB store at {self._path}: it is closed")
        return StoreError(f"cannot {action} the RocksDB store at {self._path}: {exc}")

    def __repr__(self) -> str:
        return f"RocksDBStore({str(self._path)!r})"


def _checkpoint_value(offset: int, at: float | None) -> bytes:
    at_ms = int((time.time() if at is None else at) * 1000)
    return offset.to_bytes(8, "big") + max(0, at_ms).to_bytes(8, "big")


class RocksDBStoreFactory:
    """Opens ``state_dir/<hub>/<partition>`` as a :class:`RocksDBStore`.

    Args:
        state_dir: the root of every task hub's state.
        lock_timeout: passed to :class:`RocksDBStore`.
        disable_wal: passed to :class:`RocksDBStore`.
    """

    def __init__(
        self, state_dir: Path, *, lock_timeout: float = 10.0, disable_wal: bool = False
    ) -> None:
        self.state_dir = Path(state_dir)
        self.lock_timeout = lock_timeout
        self.disable_wal = disable_wal

    def path_for(self, hub: str, partition: int) -> Path:
        """The database directory of one partition."""
        return self.state_dir / hub / str(partition)

    def open(self, hub: str, partition: int) -> RocksDBStore:
        """Open (creating if needed) the store of ``partition`` of task hub ``hub``."""
        return RocksDBStore(
            self.path_for(hub, partition),
            lock_timeout=self.lock_timeout,
            disable_wal=self.disable_wal,
        )

    def stored_partitions(self, hub: str) -> dict[int, float]:
        """Partitions of ``hub`` with a store directory, and when each was last used.

        Last used: the latest modification time of the directory and its files (an
        open database writes its log and its info log; closing it flushes).
        """
        found: dict[int, float] = {}
        try:
            entries = list(os.scandir(self.state_dir / hub))
        except FileNotFoundError:
            return found
        for entry in entries:
            if not (entry.name.isdigit() and entry.is_dir(follow_symlinks=False)):
                continue
            try:
                used = max(
                    [entry.stat().st_mtime]
                    + [f.stat().st_mtime for f in os.scandir(entry.path) if f.is_file()]
                )
            except FileNotFoundError:  # deleted meanwhile
                continue
            found[int(entry.name)] = used
        return found

    def delete(self, hub: str, partition: int) -> bool:
        """Delete the store of ``partition``, unless a process (this one too) has it open.

        RocksDB's own ``DestroyDB`` takes the database lock first, so a store that is
        open anywhere is never deleted under its owner.
        """
        path = self.path_for(hub, partition)
        if not path.exists():
            return True
        try:
            Rdict.destroy(str(path), _options())
        except Exception as exc:
            if _is_lock_error(exc):
                return False
            raise StoreError(f"cannot delete the RocksDB store at {path}: {exc}") from exc
        return True
