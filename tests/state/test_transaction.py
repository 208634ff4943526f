"""StoreTransaction: read-your-writes overlay and its status machine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durafka.errors import StoreError
from durafka.state.base import PartitionStore
from durafka.state.memory import MemoryStore
from durafka.state.rocksdb import RocksDBStore
from durafka.state.transaction import StoreTransaction, TransactionStatus


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PartitionStore]:
    s: PartitionStore = MemoryStore() if request.param == "memory" else RocksDBStore(tmp_path)
    s.write({b"a/1": b"s1", b"a/3": b"s3", b"a/5": b"s5", b"b/1": b"sb"}, 7)
    yield s
    s.close()


class SpyStore(MemoryStore):
    """Counts writes; optionally fails them."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.writes: list[tuple[dict[bytes, bytes | None], int | None]] = []
        self.fail = fail

    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int | None) -> None:
        if self.fail:
            raise StoreError("disk full")
        self.writes.append((dict(changes), changelog_offset))
        super().write(changes, changelog_offset)


def test_reads_see_own_writes(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    assert tx.get(b"a/1") == b"s1"
    tx.put(b"a/1", b"t1")
    tx.put(b"a/9", b"t9")
    tx.delete(b"a/3")
    assert tx.get(b"a/1") == b"t1"
    assert tx.get(b"a/9") == b"t9"
    assert tx.get(b"a/3") is None
    tx.put(b"a/3", b"back")
    assert tx.get(b"a/3") == b"back"
    tx.delete(b"a/9")
    assert tx.get(b"a/9") is None
    # Nothing reached the store yet.
    assert store.get(b"a/1") == b"s1"
    assert store.get(b"a/9") is None


def test_iteration_merges_pending_writes(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    tx.put(b"a/2", b"t2")  # new, between stored keys
    tx.put(b"a/3", b"t3")  # overwrite
    tx.delete(b"a/5")  # hidden
    tx.put(b"a/0", b"t0")  # new, before all
    tx.put(b"a/99", b"t99")  # new, after all
    tx.put(b"c/1", b"tc")  # outside the prefix
    tx.delete(b"a/404")  # tombstone for a missing key: invisible
    expected = [
        (b"a/0", b"t0"),
        (b"a/1", b"s1"),
        (b"a/2", b"t2"),
        (b"a/3", b"t3"),
        (b"a/99", b"t99"),
    ]
    assert list(tx.iter_prefix(b"a/")) == expected
    assert list(tx.iter_range(b"a/1", b"a/9")) == expected[1:4]
    assert list(tx.iter_range(b"a/", b"c/")) == [*expected, (b"b/1", b"sb")]
    assert list(tx.iter_prefix(b"")) == [*expected, (b"b/1", b"sb"), (b"c/1", b"tc")]
    assert list(tx.iter_range(b"b/", b"a/")) == []


def test_iteration_without_pending_writes_is_the_store(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    assert list(tx.iter_prefix(b"a/")) == list(store.iter_prefix(b"a/"))
    tx.delete(b"a/1")
    assert [k for k, _ in tx.iter_prefix(b"a/")] == [b"a/3", b"a/5"]


def test_changes_and_is_empty(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    assert tx.is_empty()
    assert dict(tx.changes) == {}
    tx.put(b"a/1", b"x")
    tx.delete(b"a/3")
    tx.put(b"a/1", b"y")
    assert not tx.is_empty()
    assert dict(tx.changes) == {b"a/1": b"y", b"a/3": None}


def test_complete_writes_changes_and_offset_atomically(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    tx.put(b"a/1", b"t1")
    tx.delete(b"a/3")
    tx.put(b"z", b"new")
    assert tx.status is TransactionStatus.STARTED
    assert dict(tx.prepare()) == {b"a/1": b"t1", b"a/3": None, b"z": b"new"}
    assert tx.status is TransactionStatus.PREPARED
    tx.complete(12)
    assert tx.status is TransactionStatus.COMPLETE
    assert store.get(b"a/1") == b"t1"
    assert store.get(b"a/3") is None
    assert store.get(b"z") == b"new"
    assert store.changelog_offset() == 12


def test_prepared_allows_reads_not_writes(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    tx.put(b"a/1", b"t1")
    tx.prepare()
    assert tx.get(b"a/1") == b"t1"
    assert next(tx.iter_prefix(b"a/")) == (b"a/1", b"t1")
    with pytest.raises(StoreError, match="prepared"):
        tx.put(b"a/2", b"x")
    with pytest.raises(StoreError, match="prepared"):
        tx.delete(b"a/1")
    with pytest.raises(StoreError, match="prepared"):
        tx.prepare()


def test_complete_requires_prepare(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    tx.put(b"a/1", b"t1")
    with pytest.raises(StoreError, match=r"started.*prepare\(\) first"):
        tx.complete(1)
    assert store.get(b"a/1") == b"s1"
    assert tx.status is TransactionStatus.STARTED


def test_completed_transaction_refuses_reuse(store: PartitionStore) -> None:
    tx = StoreTransaction(store)
    tx.put(b"a/1", b"t1")
    tx.prepare()
    tx.complete(8)
    for use in (
        lambda: tx.get(b"a/1"),
        lambda: tx.put(b"a/1", b"x"),
        lambda: tx.delete(b"a/1"),
        lambda: tx.iter_prefix(b"a/"),
        lambda: tx.iter_range(b"a", b"b"),
        tx.prepare,
        lambda: tx.complete(9),
    ):
        with pytest.raises(StoreError, match="complete store transaction"):
            use()
    tx.fail()  # a no-op on a complete transaction
    assert tx.status is TransactionStatus.COMPLETE
    assert store.changelog_offset() == 8


@pytest.mark.parametrize("prepared", [False, True])
def test_failed_transaction_refuses_reuse_and_writes_nothing(
    store: PartitionStore, prepared: bool
) -> None:
    tx = StoreTransaction(store)
    tx.put(b"a/1", b"t1")
    if prepared:
        tx.prepare()
    tx.fail()
    tx.fail()
    assert tx.status is TransactionStatus.FAILED
    for use in (lambda: tx.get(b"a/1"), lambda: tx.put(b"a/2", b"x"), lambda: tx.complete(9)):
        with pytest.raises(StoreError, match="failed store transaction"):
            use()
    assert store.get(b"a/1") == b"s1"
    assert store.changelog_offset() == 7


def test_store_write_failure_fails_the_transaction() -> None:
    spy = SpyStore(fail=True)
    tx = StoreTransaction(spy)
    tx.put(b"k", b"v")
    tx.prepare()
    with pytest.raises(StoreError, match="disk full"):
        tx.complete(3)
    assert tx.status is TransactionStatus.FAILED
    with pytest.raises(StoreError, match="failed"):
        tx.complete(3)


def test_empty_transaction_stores_only_an_offset() -> None:
    spy = SpyStore()
    tx = StoreTransaction(spy)
    tx.prepare()
    tx.complete(None)
    assert spy.writes == []
    tx = StoreTransaction(spy)
    tx.prepare()
    tx.complete(5)
    assert spy.writes == [({}, 5)]
    assert spy.changelog_offset() == 5


def test_complete_is_one_store_write() -> None:
    spy = SpyStore()
    tx = StoreTransaction(spy)
    for i in range(50):
        tx.put(b"k%02d" % i, b"v")
    tx.delete(b"k00")
    tx.prepare()
    tx.complete(51)
    assert len(spy.writes) == 1
    changes, offset = spy.writes[0]
    assert offset == 51 and len(changes) == 50 and changes[b"k00"] is None


_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete"]),
        st.sampled_from([b"", b"a", b"a/1", b"a/2", b"a/3", b"a\xff", b"b", b"b/1"]),
        st.binary(max_size=2),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    initial=st.dictionaries(
        st.sampled_from([b"a", b"a/1", b"a/3", b"b/1", b"c"]), st.binary(max_size=2)
    ),
    ops=_ops,
    prefix=st.sampled_from([b"", b"a", b"a/", b"b", b"z"]),
)
def test_overlay_matches_model(
    initial: dict[bytes, bytes], ops: list[tuple[str, bytes, bytes]], prefix: bytes
) -> None:
    store = MemoryStore()
    store.write(initial, None)
    model = dict(initial)
    tx = StoreTransaction(store)
    for op, key, value in ops:
        if op == "put":
            tx.put(key, value)
            model[key] = value
        else:
            tx.delete(key)
            model.pop(key, None)
    expected = sorted(kv for kv in model.items() if kv[0].startswith(prefix))
    assert list(tx.iter_prefix(prefix)) == expected
    assert list(tx.iter_range(prefix, prefix + b"\xff")) == [
        kv for kv in expected if kv[0] < prefix + b"\xff"
    ]
    for key in {k for _, k, _ in ops} | set(initial):
        assert tx.get(key) == model.get(key)
    tx.prepare()
    tx.complete(1)
    assert list(store.iter_prefix(b"")) == sorted(model.items())
