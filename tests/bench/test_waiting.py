"""The waiting-orchestrations memory check runs, and an evicted instance still completes."""

from __future__ import annotations

from durafka.bench.waiting import measure


async def test_waiting_instances_beyond_the_cache_complete_after_eviction() -> None:
    result = await measure(300, cache_size=10)
    assert result.n == 300
    assert result.evicted_instance_completed
    assert result.peak_rss_mib > 0


async def test_waiting_instances_on_kafka(kafka_bootstrap: str) -> None:
    result = await measure(200, cache_size=10, bootstrap=kafka_bootstrap, partitions=4)
    assert result.evicted_instance_completed
