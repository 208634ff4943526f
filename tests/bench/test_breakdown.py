"""``durafka bench breakdown``: every hop of a W1 instance is stamped, and nothing stays wrapped."""

from __future__ import annotations

import pytest

from durafka.bench.breakdown import (
    HOPS,
    SEPARATE_HOPS,
    hop_durations,
    run_breakdown,
    summarize,
)
from durafka.bench.config import BenchConfig, Workload
from durafka.errors import BenchmarkError
from durafka.processor.loop import Processor
from durafka.transport.kafka import KafkaConsumer, KafkaTransactionalProducer

HOP_NAMES = [hop for hop, _, _ in HOPS]


def test_hops_follow_the_stamps() -> None:
    stamps = {"start": 0.0, "acked": 0.001, "polled": 0.0008, "local_begin": 0.0011}
    hops = hop_durations(stamps)
    assert hops["start produce + ack"] == pytest.approx(1.0)
    assert hops["fetch wake-up"] == pytest.approx(-0.2)  # polled before the client's ack
    assert hops["step"] == pytest.approx(0.3)
    assert "local activity" not in hops
    assert "total" not in hops


def test_summary_keeps_only_complete_instances() -> None:
    complete = {hop: 1.0 for hop in HOP_NAMES} | {"total": 11.0}
    summary = summarize([complete, {"step": 5.0}])
    assert summary["instances"] == {"complete": 1, "run": 2}
    assert summary["step"] == {"p50_ms": 1.0, "p99_ms": 1.0, "mean_ms": 1.0}
    assert summary["total"]["p50_ms"] == 11.0


def test_memory_is_refused() -> None:
    with pytest.raises(BenchmarkError, match="--transport kafka"):
        run_breakdown(BenchConfig.model_validate({"workloads": ["W1"], "latency_n": 1}))


def test_a_real_breakdown_stamps_every_hop_and_unwraps(kafka_bootstrap: str) -> None:
    originals = (
        Processor._commit,
        Processor._run_local_activities,
        KafkaTransactionalProducer.flush,
        KafkaConsumer.poll_batch,
    )
    config = BenchConfig.model_validate(
        {
            "workloads": [Workload.W1],
            "transport": "kafka",
            "bootstrap": kafka_bootstrap,
            "latency_n": 5,
            "partitions": 2,
            "timeout": 60.0,
        }
    )
    result = run_breakdown(config, floors=3)
    hops = result["hops"]
    assert hops["instances"] == {"complete": 5, "run": 5}
    assert set(hops) == {*HOP_NAMES, "total", "instances"}
    for hop in ("flush (add partitions, produce)", "send offsets", "total"):
        assert hops[hop]["p50_ms"] > 0, hop
    # The hops tile the instance: from its start to the status view seeing it.
    mean_sum = sum(hops[hop]["mean_ms"] for hop in HOP_NAMES)
    assert mean_sum == pytest.approx(hops["total"]["mean_ms"], rel=1e-6)
    assert {
        "produce + ack",
        "txn 1p: flush",
        "txn 2p + offsets: send offsets",
        "txn 2p + offsets: visible to read_committed",
    } <= set(result["floors"])
    assert (
        Processor._commit,
        Processor._run_local_activities,
        KafkaTransactionalProducer.flush,
        KafkaConsumer.poll_batch,
    ) == originals


def test_a_breakdown_through_processor_and_worker_processes(kafka_bootstrap: str) -> None:
    """The production layout: the hops come from the records' timestamps."""
    config = BenchConfig.model_validate(
        {
            "workloads": [Workload.W1],
            "transport": "kafka",
            "bootstrap": kafka_bootstrap,
            "processes": "separate",
            "latency_n": 5,
            "partitions": 2,
            "timeout": 120.0,
        }
    )
    result = run_breakdown(config, floors=0)
    hops = result["hops"]
    names = [hop for hop, _, _ in SEPARATE_HOPS]
    assert hops["instances"] == {"complete": 5, "run": 5}
    assert set(hops) == {*names, "total", "instances"}
    assert result["layout"] == "1 processor process(es) + 1 worker process"
    # Each hop holds at least one transaction, except the first (timestamps are in ms).
    for hop in names[1:]:
        assert hops[hop]["mean_ms"] > 0, hop
    mean_sum = sum(hops[hop]["mean_ms"] for hop in names)
    assert mean_sum == pytest.approx(hops["total"]["mean_ms"], rel=1e-6)
