"""``durafka bench compare``: the peer's results are read right and the ratios are right.

No Restate here: the peer's ``results.json`` is written as ``benchlib.run_suite``
writes it, and durafka's side is a benchmark result built by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from durafka.bench.compare import (
    Comparison,
    compare,
    default_peers_dir,
    durafka_metrics,
    machine,
    peer_metrics,
    run_restate,
    wait_for_quiet,
)
from durafka.bench.config import Workload
from durafka.bench.report import comparison_table
from durafka.bench.results import BenchResult, Measurement, RunResult
from durafka.compiled import build_description
from durafka.errors import BenchmarkError


def summary(*runs: float) -> dict[str, Any]:
    ordered = sorted(runs)
    return {
        "median": ordered[len(ordered) // 2],
        "min": ordered[0],
        "max": ordered[-1],
        "runs": list(runs),
    }


def cpu(wall: float, server: float, service: float, client: float) -> dict[str, float]:
    return {
        "wall_s": wall,
        "system_busy_cores": 1.8,
        "server_cpu_s": server,
        "server_cores": server / wall,
        "service_cpu_s": service,
        "service_cores": service / wall,
        "client_cpu_s": client,
        "client_cores": client / wall,
    }


PEER: dict[str, Any] = {
    "params": {"runs": 3, "n_hello": 10_000, "n_lat": 200, "n_seq": 5_000, "n_fan": 200},
    "w1a_hello_throughput_per_s": summary(400.0, 500.0, 450.0),
    "w1a_cpu": [cpu(25.0, 20.0, 18.0, 6.0), cpu(20.0, 19.0, 17.0, 5.0), cpu(22.0, 18.0, 16.0, 6.0)],
    "w1b_latency_p50_ms": summary(10.0, 12.0, 11.0),
    "w1b_latency_p99_ms": summary(20.0, 20.0, 20.0),
    "w2_seq5_throughput_per_s": summary(200.0, 250.0, 220.0),
    "w3_fanout_activities_per_s": summary(2_000.0, 2_500.0, 2_400.0),
}


def run_result(
    index: int, metrics: dict[str, dict[str, float]], cpu_s: dict[str, float]
) -> RunResult:
    workload = {"w1": Workload.W1, "w2": Workload.W2, "w3": Workload.W3}
    return RunResult(
        run=index,
        timestamp="2026-11-30T09:00:00+00:00",
        durafka_version="0",
        python="3.11",
        platform="Linux",
        cpu_count=2,
        load_average=[0.5, 0.5, 0.5],
        transport="kafka",
        bootstrap="127.0.0.1:9092",
        task_hub=f"bench-{index}",
        partitions=8,
        processes={"mode": "embedded"},
        settings={},
        usage=[],
        measurements={
            name: Measurement(
                name=name,
                workload=workload[name[:2]],
                metrics=values,
                cpu_s=cpu_s if name == "w1_throughput" else {},
            )
            for name, values in metrics.items()
        },
        seconds=60.0,
    )


def durafka_result(w1_seconds: float = 12.0) -> BenchResult:
    metrics = {
        "w1_throughput": {
            "n": 40_000,
            "seconds": w1_seconds,
            "orchestrations_per_s": 40_000 / w1_seconds,
        },
        "w1_latency": {"n": 500, "p50_ms": 6.6, "p99_ms": 16.0},
        "w2_sequence": {"n": 20_000, "seconds": 20.0, "orchestrations_per_s": 1_000.0},
        "w3_fan_out": {"m": 200, "seconds": 0.02, "activities_per_s": 10_000.0},
    }
    runs = [
        run_result(1, metrics, {"bench": 8.0, "broker": 4.0}),  # 0.3 ms per instance
        run_result(2, metrics, {"bench": 10.0, "broker": 6.0}),  # 0.4 ms
        run_result(3, metrics, {"bench": 12.0, "broker": 8.0}),  # 0.5 ms
    ]
    from durafka.bench.results import median_metrics

    return BenchResult(config={}, runs=runs, median=median_metrics(runs))


def test_peer_metrics_are_the_medians_and_cpu_counts_every_peer_process() -> None:
    m = peer_metrics(PEER)
    assert m["w1_per_s"] == 450.0
    assert m["w1_p50_ms"] == 11.0
    assert m["w1_p99_ms"] == 20.0
    assert m["w2_per_s"] == 220.0
    assert m["w3_act_per_s"] == 2_400.0
    # (20 + 18 + 6) / 10,000 = 4.4 ms; 4.1 ms; 4.0 ms: the median is 4.1 ms.
    assert m["w1_cpu_ms"] == pytest.approx(4.1)
    assert m["w1_seconds"] == 22.0
    assert m["w2_seconds"] == pytest.approx(5_000 / 220.0)


def test_durafka_metrics_count_the_broker_in_the_cpu_per_instance() -> None:
    m = durafka_metrics(durafka_result())
    assert m["w1_per_s"] == pytest.approx(40_000 / 12.0)
    assert m["w1_p50_ms"] == 6.6
    assert m["w1_cpu_ms"] == pytest.approx(0.4)


def test_ratios_and_targets() -> None:
    rows = {r.key: r for r in compare(peer_metrics(PEER), durafka_metrics(durafka_result()))}
    w1 = rows["w1_per_s"]
    assert w1.ratio == pytest.approx((40_000 / 12.0) / 450.0)  # 7.4x
    assert w1.met is False  # the target is 8x
    assert not w1.short
    p50 = rows["w1_p50_ms"]
    assert p50.ratio == pytest.approx(0.6)
    assert p50.met is True  # <= 0.7x: lower is better
    assert rows["w1_p99_ms"].ratio == pytest.approx(0.8)
    assert rows["w1_p99_ms"].met is True
    assert rows["w2_per_s"].ratio == pytest.approx(1_000 / 220)
    assert rows["w2_per_s"].met is True
    assert rows["w3_act_per_s"].met is False  # 10,000 / 2,400 = 4.2x < 5x
    cost = rows["w1_cpu_ms"]
    assert cost.ratio == pytest.approx(0.4 / 4.1)
    assert cost.met is False  # 1/10 is more than 1/15


def test_a_short_throughput_run_is_flagged() -> None:
    rows = {r.key: r for r in compare(peer_metrics(PEER), durafka_metrics(durafka_result(3.0)))}
    assert rows["w1_per_s"].short
    assert not rows["w2_per_s"].short


def test_a_missing_side_gives_no_ratio() -> None:
    peer = {k: v for k, v in PEER.items() if not k.startswith("w3")}
    rows = {r.key: r for r in compare(peer_metrics(peer), durafka_metrics(durafka_result()))}
    assert rows["w3_act_per_s"].ratio is None
    assert rows["w3_act_per_s"].met is None


def test_the_table_and_json_show_both_numbers_and_the_ratio() -> None:
    result = durafka_result()
    comparison = Comparison(
        machine=machine(),
        rows=compare(peer_metrics(PEER), durafka_metrics(result)),
        restate=PEER,
        durafka=result.model_dump(mode="json"),
        settle_s=7.0,
    )
    console = Console(record=True, width=200)
    console.print(comparison_table(comparison))
    # The title and caption wrap at the table's width, which follows the machine's
    # CPU name: compare with the line breaks and padding folded into single spaces.
    text = " ".join(console.export_text().split())
    assert "450 orch/s" in text
    assert "3,333 orch/s" in text
    assert "7.41x" in text
    assert "0.60x" in text
    assert ">= 8x: not met" in text
    assert "1/10.3" in text  # 0.4 ms against 4.1 ms of CPU per instance
    assert f"{comparison.machine['cores']} cores" in text
    assert f"durafka {build_description()}" in text  # which build was measured
    assert "durafka started 7 s after the peer's last run" in text
    data = json.loads(json.dumps(comparison.to_json()))
    assert data["machine"]["cpu_model"]
    assert data["settle_s"] == 7.0
    assert {r["key"] for r in data["rows"]} == {
        "w1_per_s",
        "w1_p50_ms",
        "w1_p99_ms",
        "w2_per_s",
        "w3_act_per_s",
        "w1_cpu_ms",
    }


def test_a_missing_peer_folder_is_a_benchmark_error(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="--peers"):
        run_restate(tmp_path / "nowhere", tmp_path / "work", runs=1, n_hello=10, n_seq=10)


def test_the_default_peers_folder_is_beside_the_repository() -> None:
    assert default_peers_dir() == Path(__file__).resolve().parents[2].parent / "shared" / "peers"


class _FakeMachine:
    """Busy readings in turn, one simulated second each."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)
        self.now = 0.0

    def busy(self) -> float:
        self.now += 1.0
        return self.readings.pop(0) if self.readings else 0.0

    def clock(self) -> float:
        return self.now


def test_the_comparison_waits_for_quiet_readings_in_a_row() -> None:
    # A busy reading in between starts the count again.
    fake = _FakeMachine(90, 40, 5, 5, 60, 5, 5, 5, 99)
    waited = wait_for_quiet(samples=3, busy_percent=fake.busy, clock=fake.clock)
    assert waited == 8.0
    assert fake.readings == [99]


def test_a_machine_that_stays_busy_is_waited_for_at_most_max_seconds() -> None:
    fake = _FakeMachine(*[80.0] * 100)
    assert wait_for_quiet(max_seconds=10, busy_percent=fake.busy, clock=fake.clock) == 10.0
