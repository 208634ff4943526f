"""StoreCleaner: the stores of partitions not owned here go after ``state_cleanup_delay_ms``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from durafka.state.cleanup import StoreCleaner
from durafka.state.memory import MemoryStoreFactory
from durafka.state.rocksdb import RocksDBStoreFactory

HUB = "hub"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_deletes_stores_unused_for_the_delay_and_nothing_in_use() -> None:
    factory = MemoryStoreFactory()
    for p in (0, 1, 2, 3):
        factory.open(HUB, p).close()
    still_open = factory.open(HUB, 3)
    factory.open("other-hub", 1).close()
    clock = Clock()
    cleaner = StoreCleaner(factory, HUB, delay=600, clock=clock)
    assert cleaner.step(in_use={0}) == []  # nothing unused for 10 minutes yet
    clock.now += 601
    # 0 is owned or restoring here, 3 is open (another owner): both stay.
    assert cleaner.step(in_use={0}) == [1, 2]
    assert sorted(factory.stored_partitions(HUB)) == [0, 3]
    assert sorted(factory.stored_partitions("other-hub")) == [1]
    still_open.close()


def test_rocksdb_stores_are_dated_by_their_files(tmp_path: Path) -> None:
    factory = RocksDBStoreFactory(tmp_path)
    store = factory.open(HUB, 5)
    store.write({b"i/a": b"1"}, 1)
    store.close()
    factory.open(HUB, 6).close()
    (tmp_path / HUB / "not-a-partition").mkdir()
    week_ago = time.time() - 7 * 86400
    path = factory.path_for(HUB, 5)
    for f in [path, *path.iterdir()]:
        os.utime(f, (week_ago, week_ago))
    stored = factory.stored_partitions(HUB)
    assert sorted(stored) == [5, 6]
    assert stored[5] < time.time() - 6 * 86400 < stored[6]
    assert StoreCleaner(factory, HUB, delay=3600).step(in_use=set()) == [5]
    assert not path.exists() and factory.path_for(HUB, 6).is_dir()
