"""``durafka bench`` keeps working: tiny runs on memory:// and on the real broker.

Performance is reported by the benchmark, never asserted here: these tests check
that every workload runs, every result is verified and counted, and the report
(JSON, tables) has its keys and sane numbers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from durafka.bench import BenchConfig, BenchResult, ProcessMode, Workload, hosting, run_benchmark
from durafka.bench import workloads as bench_workloads
from durafka.bench.drivers import Drive, percentile
from durafka.bench.hosting import split_partitions
from durafka.bench.progress import NoProgress
from durafka.cli import app as cli
from durafka.compiled import build_description
from durafka.errors import BenchmarkError

TINY: dict[str, Any] = {
    "w1_n": 30,
    "latency_n": 5,
    "w2_n": 10,
    "w3_m": 20,
    "w4_counters": 4,
    "w4_signals": 40,
    "partitions": 2,
    "timeout": 60.0,
}
MEASUREMENTS = {"w1_throughput", "w1_latency", "w2_sequence", "w3_fan_out", "w4_entity_counter"}
RUN_KEYS = {
    "run",
    "timestamp",
    "durafka_version",
    "build",
    "python",
    "platform",
    "cpu_count",
    "load_average",
    "transport",
    "bootstrap",
    "task_hub",
    "partitions",
    "processes",
    "settings",
    "usage",
    "measurements",
    "seconds",
}


def check_run(run: dict[str, Any], config: BenchConfig, processes: set[str]) -> None:
    """The keys and sane numbers of one run in the JSON report."""
    assert set(run) == RUN_KEYS
    assert run["build"] == build_description()
    assert run["transport"] == config.transport
    assert run["partitions"] == config.partitions
    assert run["cpu_count"] >= 1
    assert set(run["settings"]) >= {"batch_size", "cache_size"}
    assert {u["name"] for u in run["usage"]} == processes
    for u in run["usage"]:
        assert u["cpu_s"] > 0, u
        assert u["cpu_s"] == pytest.approx(u["cpu_user_s"] + u["cpu_system_s"], abs=0.002)
        assert u["peak_rss_mb"] > 10, u

    m = run["measurements"]
    assert set(m) == MEASUREMENTS
    for name, measurement in m.items():
        assert measurement["available"], name
        # A broker on this machine is read too (when its process can be seen).
        assert set(measurement["cpu_s"]) - {"broker"} == processes, name
        if config.transport == "memory":
            assert "broker" not in measurement["cpu_s"], name

    w1 = m["w1_throughput"]["metrics"]
    assert w1["n"] == w1["verified"] == config.w1_n
    assert w1["orchestrations_per_s"] > 0
    assert w1["orchestrations_per_s"] == pytest.approx(w1["n"] / w1["seconds"], rel=0.01)
    assert 0 < w1["start_seconds"] <= w1["seconds"]
    # Processors stamp completions in ms: the processed time is within a ms of the seen one.
    assert 0 <= w1["processed_seconds"] <= w1["seconds"] + 0.002
    assert w1["view_lag_ms"] >= 0

    lat = m["w1_latency"]["metrics"]
    assert lat["n"] == lat["verified"] == config.latency_n
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]

    w2 = m["w2_sequence"]["metrics"]
    assert w2["n"] == w2["verified"] == config.w2_n
    assert w2["activities_per_s"] == pytest.approx(5 * w2["orchestrations_per_s"], rel=0.01)
    assert 0 <= w2["processed_seconds"] <= w2["seconds"] + 0.002

    w3 = m["w3_fan_out"]["metrics"]
    assert w3["m"] == config.w3_m and w3["verified"] == 1
    assert w3["activities_per_s"] > 0

    w4 = m["w4_entity_counter"]["metrics"]
    assert w4["signals"] == config.w4_signals
    assert w4["counters"] == w4["verified"] == config.w4_counters
    assert w4["signals_per_s"] > 0


def hub_topics(bootstrap: str, hub: str) -> list[str]:
    """The broker's topics of task hub ``hub``."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return [t for t in topics if t.startswith(f"{hub}.")]


# -- through the CLI ------------------------------------------------------------------


def test_cli_on_memory_writes_every_run_and_the_median(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "all", "--n", "30", "--latency-n", "5", "--m", "20", "--counters", "4"]
    args += ["--signals", "40", "--partitions", "2", "--runs", "2", "--json", str(out)]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    assert "W1 throughput" in result.output and "Median of 2 runs" in result.output
    report = json.loads(out.read_text())
    assert set(report) == {"config", "runs", "median"}
    config = BenchConfig(**report["config"])
    assert [r["run"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        check_run(run, config, {"bench"})
        assert run["processes"]["mode"] == "embedded"
        assert run["bootstrap"].startswith("memory://")
    assert report["runs"][0]["task_hub"] != report["runs"][1]["task_hub"]
    rates = [
        r["measurements"]["w1_throughput"]["metrics"]["orchestrations_per_s"]
        for r in report["runs"]
    ]
    assert report["median"]["w1_throughput"]["orchestrations_per_s"] == pytest.approx(
        sum(rates) / 2, rel=0.01
    )


def test_cli_rejects_separate_processes_on_memory() -> None:
    result = CliRunner().invoke(cli, ["bench", "W1", "--processes", "separate"])

    assert result.exit_code == 2
    assert "--transport kafka" in result.output


def test_cli_needs_a_cluster_for_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: it assumed 127.0.0.1:9092. A directory without a dev broker, and no
    # cluster named: the one error of every command (tests/cli/test_dev_broker.py
    # has the dev broker found).
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DURAFKA_BOOTSTRAP_SERVERS", raising=False)
    result = CliRunner().invoke(cli, ["bench", "W1", "--transport", "kafka"])

    assert result.exit_code == 2
    assert "no Kafka cluster given" in result.output
    assert "DURAFKA_BOOTSTRAP_SERVERS" in result.output
    assert "durafka dev-broker start" in result.output


def test_cli_rejects_an_unknown_workload() -> None:
    result = CliRunner().invoke(cli, ["bench", "W9"])

    assert result.exit_code == 2
    assert "W9" in result.output


# -- through the API, on the real broker --------------------------------------------------


def test_kafka_embedded(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = BenchConfig(transport="kafka", bootstrap=kafka_bootstrap, work_dir=tmp_path, **TINY)

    result = run_benchmark(config)

    [run] = BenchResult.model_validate(result.model_dump(mode="json")).runs
    check_run(run.model_dump(mode="json"), config, {"bench"})
    assert run.settings["state_store"] == "rocksdb"
    assert hub_topics(kafka_bootstrap, run.task_hub) == []  # the run cleaned up its hub
    assert list(tmp_path.iterdir()) == []  # and its state folder


def test_kafka_separate_processes_split_the_partitions(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = BenchConfig(
        transport="kafka",
        bootstrap=kafka_bootstrap,
        processes=ProcessMode.SEPARATE,
        processors=2,
        batch_size=50,
        **TINY,
    )

    result = run_benchmark(config)

    [run] = result.runs
    check_run(
        run.model_dump(mode="json"), config, {"bench", "processor-1", "processor-2", "worker"}
    )
    assert run.processes["processor_partitions"] == ["0-0", "1-1"]
    assert run.settings["batch_size"] == 50
    assert len({u.pid for u in run.usage}) == 4
    assert hub_topics(kafka_bootstrap, run.task_hub) == []


# -- verification and pieces ---------------------------------------------------------------


def test_a_wrong_result_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_workloads, "expected_sequence", lambda start: start + 4)
    config = BenchConfig(workloads=(Workload.W2,), **TINY)

    with pytest.raises(BenchmarkError, match=r"W2 sequence: instance w2-\d+ returned"):
        run_benchmark(config)


def test_split_partitions_is_contiguous_and_even() -> None:
    assert split_partitions(8, 1) == ["0-7"]
    assert split_partitions(8, 3) == ["0-2", "3-5", "6-7"]
    assert split_partitions(2, 2) == ["0-0", "1-1"]


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_counter_expectations_add_up() -> None:
    counts = [bench_workloads.expected_count(k, 7, 100) for k in range(7)]
    assert sum(counts) == 100 and max(counts) - min(counts) == 1


def test_a_dead_role_process_fails_the_run_with_its_log(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosting, "BENCH_APP", "durafka.bench.workloads:no_such_app")
    config = BenchConfig(
        transport="kafka", bootstrap=kafka_bootstrap, processes=ProcessMode.SEPARATE, **TINY
    )

    with pytest.raises(BenchmarkError, match=r"(?s)a role process died.*no_such_app"):
        run_benchmark(config)


async def test_a_workload_that_hangs_fails_with_how_far_it_got() -> None:
    drive = Drive(
        client=None,  # type: ignore[arg-type]  # guarded() never touches the client
        progress=NoProgress(),
        check=lambda: None,
        timeout=0.3,
        max_in_flight=1,
    )

    with pytest.raises(BenchmarkError, match=r"W1 did not finish within 0.3 s \(3 of 5 done\)"):
        await drive.guarded("W1", asyncio.sleep(60), lambda: "3 of 5 done")
