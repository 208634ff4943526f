"""The PartitionStore contract, run against RocksDB and the in-memory store."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durafka.errors import StoreError
from durafka.state.base import PartitionStore, StoreFactory
from durafka.state.memory import MemoryStore, MemoryStoreFactory
from durafka.state.rocksdb import CHANGELOG_OFFSET_KEY, RocksDBStore, RocksDBStoreFactory

HUB = "hub"

MakeFactory = Callable[..., StoreFactory]


@pytest.fixture(params=["rocksdb", "memory"])
def make_factory(request: pytest.FixtureRequest, tmp_path: Path) -> MakeFactory:
    """Builds a factory of the parametrised kind; reopening finds the same data."""
    if request.param == "rocksdb":
        return lambda lock_timeout=10.0: RocksDBStoreFactory(tmp_path, lock_timeout=lock_timeout)
    memory = MemoryStoreFactory()

    def make(lock_timeout: float = 10.0) -> StoreFactory:
        memory.lock_timeout = lock_timeout
        return memory

    return make


@pytest.fixture
def store(make_factory: MakeFactory) -> Iterator[PartitionStore]:
    s = make_factory().open(HUB, 0)
    yield s
    s.close()


def test_get_put_delete(store: PartitionStore) -> None:
    assert store.get(b"i/a") is None
    store.write({b"i/a": b"1", b"i/b": b"2"}, None)
    assert store.get(b"i/a") == b"1"
    assert store.get(b"i/b") == b"2"
    store.write({b"i/a": None, b"i/b": b"3", b"i/never": None}, None)
    assert store.get(b"i/a") is None
    assert store.get(b"i/b") == b"3"
    assert store.get(b"i/never") is None


def test_empty_value_is_not_a_delete(store: PartitionStore) -> None:
    store.write({b"e/x": b""}, None)
    assert store.get(b"e/x") == b""
    assert list(store.iter_prefix(b"e/")) == [(b"e/x", b"")]


KEYS = [
    b"h/a/00000001",
    b"h/a/00000002",
    b"h/a/00000010",
    b"h/ab",
    b"h/b/00000001",
    b"i/a",
    b"i/ab",
    b"t/000000000001000/a/1",
    b"t/000000000002000/b/1",
    b"t/000000000003000/a/2",
    b"\xff\xff",
    b"\xff\xff\x00",
]


@pytest.fixture
def filled(store: PartitionStore) -> PartitionStore:
    # Insertion order differs from key order on purpose.
    store.write({k: b"v:" + k for k in reversed(KEYS)}, 42)
    return store


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"h/a/", KEYS[0:3]),
        (b"h/a", KEYS[0:4]),
        (b"h/", KEYS[0:5]),
        (b"i/a", KEYS[5:7]),
        (b"t/", KEYS[7:10]),
        (b"\xff", KEYS[10:12]),
        (b"\xff\xff", KEYS[10:12]),
        (b"\xff\xff\x00", KEYS[11:12]),
        (b"x/", []),
        (b"h/a/00000001/", []),
        (b"", KEYS),
    ],
)
def test_iter_prefix_order_and_bounds(
    filled: PartitionStore, prefix: bytes, expected: list[bytes]
) -> None:
    assert list(filled.iter_prefix(prefix)) == [(k, b"v:" + k) for k in expected]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (b"t/", b"t/000000000002000", KEYS[7:8]),
        (b"t/", b"t/000000000002001", KEYS[7:9]),
        (b"t/000000000001000/a/1", b"t/000000000003000/a/2", KEYS[7:9]),
        (b"h/a/00000002", b"h/b", KEYS[1:4]),
        (b"", b"\xff", KEYS[0:10]),
        (b"", b"\xff\xff\xff", KEYS),
        (b"i/", b"i/", []),
        (b"t/", b"h/", []),
    ],
)
def test_iter_range_half_open(
    filled: PartitionStore, start: bytes, end: bytes, expected: list[bytes]
) -> None:
    assert list(filled.iter_range(start, end)) == [(k, b"v:" + k) for k in expected]


def test_iteration_beyond_one_chunk(store: PartitionStore) -> None:
    # More items than one RocksDB read chunk, with deletes in between.
    keys = [b"h/x/%08d" % i for i in range(1500)]
    store.write(dict.fromkeys(keys, b"v"), None)
    store.write({k: None for k in keys[::3]}, None)
    expected = [k for i, k in enumerate(keys) if i % 3]
    assert [k for k, _ in store.iter_prefix(b"h/x/")] == expected
    assert [k for k, _ in store.iter_range(keys[100], keys[1400])] == expected[66:933]


def test_writes_during_iteration_do_not_break_it(store: PartitionStore) -> None:
    store.write({b"a/%03d" % i: b"v" for i in range(10)}, None)
    seen = []
    for key, _ in store.iter_prefix(b"a/"):
        seen.append(key)
        store.write({key: None, b"b/" + key: b"moved"}, None)
    assert seen == [b"a/%03d" % i for i in range(10)]
    assert list(store.iter_prefix(b"a/")) == []
    assert len(list(store.iter_prefix(b"b/"))) == 10


def test_changelog_offset_written_with_data(store: PartitionStore) -> None:
    assert store.changelog_offset() is None
    store.write({b"i/a": b"1"}, 10)
    assert store.changelog_offset() == 10
    store.write({b"i/b": b"2"}, None)  # None keeps the checkpoint
    assert store.changelog_offset() == 10
    store.write({}, 17)  # an offset alone moves it
    assert store.changelog_offset() == 17
    store.write({b"i/c": b"3"}, 2**40)
    assert store.changelog_offset() == 2**40
    # The checkpoint is never part of the data.
    assert [k for k, _ in store.iter_prefix(b"")] == [b"i/a", b"i/b", b"i/c"]
    assert [k for k, _ in store.iter_range(b"", b"\xff")] == [b"i/a", b"i/b", b"i/c"]


def test_checkpoint_time_is_written_with_the_offset(store: PartitionStore) -> None:
    assert store.checkpoint_time() is None
    before = time.time()
    store.write({b"i/a": b"1"}, 10)  # no time given: now
    taken = store.checkpoint_time()
    assert taken is not None and before - 0.01 <= taken <= time.time() + 0.01
    store.write({b"i/b": b"2"}, None)  # None keeps the checkpoint, time included
    assert store.checkpoint_time() == taken
    store.write({}, 11, checkpoint_time=1_000_000.25)
    assert store.changelog_offset() == 11
    assert store.checkpoint_time() == pytest.approx(1_000_000.25, abs=0.001)


def test_clear_deletes_every_key_and_the_checkpoint(make_factory: MakeFactory) -> None:
    factory = make_factory()
    s = factory.open(HUB, 2)
    s.write({b"i/a": b"1", b"t/000000000001000/a\x000": b""}, 7)
    s.clear()
    assert list(s.iter_prefix(b"")) == []
    assert s.changelog_offset() is None and s.checkpoint_time() is None
    s.write({b"i/b": b"2"}, 3)  # usable at once
    s.close()
    s = factory.open(HUB, 2)
    try:
        assert list(s.iter_prefix(b"")) == [(b"i/b", b"2")]
        assert s.changelog_offset() == 3
    finally:
        s.close()


def test_factory_lists_and_deletes_stores_but_never_an_open_one(
    make_factory: MakeFactory,
) -> None:
    factory = make_factory()
    assert factory.stored_partitions(HUB) == {}
    before = time.time()
    kept = factory.open(HUB, 1)
    kept.write({b"i/a": b"1"}, 1)
    closed = factory.open(HUB, 4)
    closed.write({b"i/a": b"1"}, 1)
    closed.close()
    factory.open("another-hub", 5).close()
    stored = factory.stored_partitions(HUB)
    assert sorted(stored) == [1, 4]
    assert all(used >= before - 1 for used in stored.values())

    assert factory.delete(HUB, 1) is False  # open: refused
    assert factory.delete(HUB, 4) is True
    assert factory.delete(HUB, 9) is True  # nothing there: nothing to do
    assert sorted(factory.stored_partitions(HUB)) == [1]
    assert kept.get(b"i/a") == b"1"
    kept.close()
    again = factory.open(HUB, 4)  # a deleted store comes back empty
    try:
        assert again.changelog_offset() is None
        assert list(again.iter_prefix(b"")) == []
    finally:
        again.close()


def test_rocksdb_store_open_in_another_process_is_not_deleted(tmp_path: Path) -> None:
    factory = RocksDBStoreFactory(tmp_path)
    path = factory.path_for(HUB, 3)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from durafka.state.rocksdb import RocksDBStore;"
            "s = RocksDBStore(Path(sys.argv[1])); s.write({b'i/a': b'1'}, 4);"
            "print('ready', flush=True); sys.stdin.readline(); s.close()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        assert factory.delete(HUB, 3) is False
        assert path.is_dir()
        holder.stdin.write("done\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        assert factory.delete(HUB, 3) is True
        assert not path.exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_rocksdb_checkpoint_of_an_older_store_has_no_time(tmp_path: Path) -> None:
    """Stores written before checkpoints had a time hold the offset alone (8 bytes)."""
    store = RocksDBStore(tmp_path / "db")
    try:
        store._db.put(CHANGELOG_OFFSET_KEY, (42).to_bytes(8, "big"))
        assert store.changelog_offset() == 42
        assert store.checkpoint_time() is None
    finally:
        store.close()


def test_negative_offset_rejected(store: PartitionStore) -> None:
    with pytest.raises(StoreError, match="-1"):
        store.write({b"i/a": b"1"}, -1)
    assert store.get(b"i/a") is None


def test_reopen_keeps_data_and_offset(make_factory: MakeFactory) -> None:
    factory = make_factory()
    s = factory.open(HUB, 3)
    s.write({b"i/a": b"1", b"h/a/00000001": b"h"}, 5)
    s.write({b"i/a": b"2"}, 9)
    s.close()
    s.close()  # idempotent

    other = factory.open(HUB, 4)  # another partition is another store
    assert other.get(b"i/a") is None
    assert other.changelog_offset() is None
    other.close()

    s = factory.open(HUB, 3)
    try:
        assert s.get(b"i/a") == b"2"
        assert list(s.iter_prefix(b"h/")) == [(b"h/a/00000001", b"h")]
        assert s.changelog_offset() == 9
    finally:
        s.close()


def test_closed_store_refuses_use(make_factory: MakeFactory) -> None:
    s = make_factory().open(HUB, 0)
    s.write({b"i/a": b"1"}, 1)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get(b"i/a")
    with pytest.raises(StoreError, match="closed"):
        s.write({b"i/a": b"2"}, 2)
    with pytest.raises(StoreError, match="closed"):
        list(s.iter_prefix(b"i/"))


def test_abandoned_iterator_does_not_hold_the_partition(make_factory: MakeFactory) -> None:
    factory = make_factory(lock_timeout=0.5)
    s = factory.open(HUB, 0)
    s.write({b"h/%04d" % i: b"v" for i in range(600)}, 1)
    it = s.iter_prefix(b"h/")
    next(it)  # a generator left half-way, still referenced
    s.close()
    reopened = factory.open(HUB, 0)
    try:
        assert reopened.changelog_offset() == 1
    finally:
        reopened.close()
    del it


def test_open_waits_for_the_previous_owner(make_factory: MakeFactory) -> None:
    factory = make_factory(lock_timeout=10.0)
    first = factory.open(HUB, 0)
    first.write({b"i/a": b"1"}, 1)
    closer = threading.Timer(0.3, first.close)
    closer.start()
    began = time.monotonic()
    second = factory.open(HUB, 0)
    waited = time.monotonic() - began
    closer.join()
    try:
        assert waited >= 0.2
        assert second.get(b"i/a") == b"1"
    finally:
        second.close()


def test_open_gives_up_after_lock_timeout(make_factory: MakeFactory) -> None:
    factory = make_factory(lock_timeout=0.3)
    first = factory.open(HUB, 0)
    try:
        began = time.monotonic()
        with pytest.raises(StoreError, match=r"still (locked|open) after 0\.3s") as info:
            factory.open(HUB, 0)
        assert 0.25 <= time.monotonic() - began < 5
        assert f"{HUB}/0" in str(info.value)  # names the partition (its path for RocksDB)
    finally:
        first.close()


def test_rocksdb_lock_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / HUB / "7"
    first = RocksDBStore(path)
    try:
        with pytest.raises(StoreError) as info:
            RocksDBStore(path, lock_timeout=0.1)
        assert str(path) in str(info.value)
    finally:
        first.close()


def test_rocksdb_waits_for_another_process(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from durafka.state.rocksdb import RocksDBStore;"
            "s = RocksDBStore(Path(sys.argv[1])); s.write({b'i/a': b'1'}, 4);"
            "print('ready', flush=True); time.sleep(0.5); s.close()",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="still locked"):
            RocksDBStore(path, lock_timeout=0.05)
        store = RocksDBStore(path, lock_timeout=20)
        try:
            assert store.changelog_offset() == 4
        finally:
            store.close()
    finally:
        holder.wait(30)
    assert holder.returncode == 0


def test_rocksdb_factory_layout(tmp_path: Path) -> None:
    store = RocksDBStoreFactory(tmp_path).open("my-hub", 12)
    store.close()
    assert (tmp_path / "my-hub" / "12").is_dir()


def test_rocksdb_reserved_key_rejected(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path / "db")
    try:
        with pytest.raises(StoreError, match="reserved"):
            store.write({CHANGELOG_OFFSET_KEY: b"\x00" * 8, b"i/a": b"1"}, None)
        assert store.get(b"i/a") is None
    finally:
        store.close()


def test_rocksdb_without_wal_keeps_data_across_clean_close(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path / "db", disable_wal=True)
    store.write({b"i/a": b"1"}, 3)
    store.close()
    store = RocksDBStore(tmp_path / "db", disable_wal=True)
    try:
        assert store.get(b"i/a") == b"1"
        assert store.changelog_offset() == 3
    finally:
        store.close()


def test_rocksdb_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=str(blocker)):
        RocksDBStore(blocker / "db")


def test_memory_factory_drop_forgets_data() -> None:
    factory = MemoryStoreFactory()
    s = factory.open(HUB, 0)
    s.write({b"i/a": b"1"}, 1)
    s.close()
    factory.drop(HUB, 0)
    s = factory.open(HUB, 0)
    assert s.get(b"i/a") is None
    assert s.changelog_offset() is None


# --- model-based: random batches against a dict -------------------------------------

_keys = st.binary(min_size=0, max_size=4).map(lambda b: b"k" + b) | st.sampled_from(
    [b"k", b"k\x00", b"k\xff", b"k\xff\xff", b"l"]
)
_batches = st.lists(
    st.dictionaries(_keys, st.none() | st.binary(max_size=3), max_size=40), max_size=8
)
_bounds = st.binary(max_size=3).map(lambda b: b"k" + b) | st.just(b"")


def _check_against_model(
    store: PartitionStore,
    batches: list[dict[bytes, bytes | None]],
    probes: list[tuple[bytes, bytes]],
) -> None:
    model: dict[bytes, bytes] = {}
    for i, batch in enumerate(batches):
        store.write(batch, i)
        for k, v in batch.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
    expected = sorted(model.items())
    assert list(store.iter_prefix(b"")) == expected
    for a, b in probes:
        assert list(store.iter_prefix(a)) == [kv for kv in expected if kv[0].startswith(a)]
        assert list(store.iter_range(a, b)) == [kv for kv in expected if a <= kv[0] < b]
    for k in model:
        assert store.get(k) == model[k]
    assert store.changelog_offset() == (len(batches) - 1 if batches else None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=_batches, probes=st.lists(st.tuples(_bounds, _bounds), max_size=5))
def test_memory_matches_model(
    batches: list[dict[bytes, bytes | None]], probes: list[tuple[bytes, bytes]]
) -> None:
    _check_against_model(MemoryStore(), batches, probes)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=_batches, probes=st.lists(st.tuples(_bounds, _bounds), max_size=5))
def test_rocksdb_matches_model(
    batches: list[dict[bytes, bytes | None]], probes: list[tuple[bytes, bytes]]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = RocksDBStore(Path(d) / "db")
        try:
            _check_against_model(store, batches, probes)
        finally:
            store.close()
