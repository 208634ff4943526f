"""The instance cache: least recently used first out, finished instances before running ones."""

from __future__ import annotations

from durafka.codec.records import InstanceState
from durafka.processor.instances import Instance, InstanceCache
from durafka.status import OrchestrationStatus, RuntimeStatus


def _inst(iid: str) -> Instance:
    status = OrchestrationStatus(
        iid, "o", RuntimeStatus.RUNNING, None, None, None, None, 0, 0, None
    )
    return Instance(iid, 0, InstanceState(status))


def _ids(cache: InstanceCache) -> list[str]:
    return [inst.instance_id for inst in cache]


def test_trim_evicts_the_least_recently_used() -> None:
    cache = InstanceCache(2)
    for iid in ("a", "b", "c"):
        cache.put(_inst(iid))
    assert cache.get("a") is not None  # a is now the most recent
    cache.trim()
    assert _ids(cache) == ["c", "a"]


def test_a_demoted_instance_goes_first_whatever_its_use() -> None:
    cache = InstanceCache(2)
    for iid in ("running-1", "running-2", "finished"):
        cache.put(_inst(iid))
    cache.demote("finished")
    cache.trim()
    assert _ids(cache) == ["running-1", "running-2"]
    cache.demote("not-cached")  # nothing to do
    assert len(cache) == 2


def test_zero_capacity_keeps_nothing_after_trim() -> None:
    cache = InstanceCache(0)
    cache.put(_inst("a"))
    assert cache.get("a") is not None  # usable within the batch
    cache.trim()
    assert len(cache) == 0
