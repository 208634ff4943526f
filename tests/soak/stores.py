"""The store check: a store rebuilt from the changelog equals the live one, key by key.

After the roles of a phase stopped cleanly, each partition's changelog is
restored (:func:`~durafka.state.restore.restore_partition`) into an empty
:class:`~durafka.state.rocksdb.RocksDBStore`, and compared with the store of
the partition's last owner. The last owner is the one whose checkpoint is
furthest: checkpoints only move forward with commits, and a restore ends past
the previous owner's last commit marker, so an earlier owner's leftover store
is never further. Stores with the same checkpoint are all compared (if they
differ, one of them is not a function of the changelog).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from durafka.state.restore import restore_partition
from durafka.state.rocksdb import RocksDBStore
from durafka.topology import HubTopics
from durafka.transport.base import TopicPartition, Transport

__all__ = ["check_restored_stores"]

_SHOWN = 5
_RESTORE_TIMEOUT = 120.0


def check_restored_stores(
    transport: Transport,
    hub: str,
    partitions: int,
    state_dirs: Mapping[str, Path],
    scratch: Path,
) -> tuple[list[str], str]:
    """Compare every partition's last owner's store with one restored from the changelog.

    Args:
        transport: to read the changelog.
        hub: the task hub.
        partitions: how many partitions it has.
        state_dirs: role name -> its state dir (the stores are ``<dir>/<hub>/<p>``).
        scratch: an empty directory for the restored stores.

    Returns:
        The problems, and one line saying what was compared.
    """
    problems: list[str] = []
    keys = 0
    owners: list[str] = []
    for p in range(partitions):
        live = _last_owners(state_dirs, hub, p)
        if not live:
            problems.append(f"partition {p}: no processor has a store of it")
            continue
        restored_path = scratch / hub / str(p)
        restored = RocksDBStore(restored_path)
        try:
            consumer = transport.consumer(None)
            try:
                restore_partition(
                    restored,
                    consumer,
                    TopicPartition(HubTopics(hub).changelog, p),
                    deadline=time.monotonic() + _RESTORE_TIMEOUT,
                )
            finally:
                consumer.close()
            rebuilt = dict(restored.iter_prefix(b""))
        finally:
            restored.close()
        keys += len(rebuilt)
        for role, items in live.items():
            owners.append(f"{p}:{role}")
            difference = _difference(items, rebuilt)
            if difference:
                problems.append(
                    f"partition {p}: the store of {role} differs from the changelog restored "
                    f"into an empty store: {difference}"
                )
    return problems, f"{keys} keys restored and compared (partition:last owner {owners})"


def _last_owners(
    state_dirs: Mapping[str, Path], hub: str, partition: int
) -> dict[str, dict[bytes, bytes]]:
    """The contents of the stores of ``partition`` with the furthest checkpoint, by role."""
    found: dict[str, tuple[int, dict[bytes, bytes]]] = {}
    for role, state_dir in state_dirs.items():
        path = state_dir / hub / str(partition)
        if not path.is_dir():
            continue
        store = RocksDBStore(path, lock_timeout=5.0)
        try:
            checkpoint = store.changelog_offset()
            found[role] = (-1 if checkpoint is None else checkpoint, dict(store.iter_prefix(b"")))
        finally:
            store.close()
    if not found:
        return {}
    furthest = max(checkpoint for checkpoint, _ in found.values())
    return {
        f"{role} (checkpoint {c})": items for role, (c, items) in found.items() if c == furthest
    }


def _difference(live: dict[bytes, bytes], rebuilt: dict[bytes, bytes]) -> str:
    """What differs between two stores' contents ("" when equal)."""
    missing = sorted(rebuilt.keys() - live.keys())
    extra = sorted(live.keys() - rebuilt.keys())
    changed = sorted(k for k in live.keys() & rebuilt.keys() if live[k] != rebuilt[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys only in the restored store {missing[:_SHOWN]}")
    if extra:
        parts.append(f"{len(extra)} keys only in the live store {extra[:_SHOWN]}")
    if changed:
        parts.append(f"{len(changed)} values differ {changed[:_SHOWN]}")
    return "; ".join(parts)
