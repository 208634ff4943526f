"""What a benchmark reports: per-workload metrics, per-process usage, run metadata."""

from __future__ import annotations

import statistics
from typing import Any

from pydantic import BaseModel, Field

from durafka.bench.config import Workload

__all__ = ["BenchResult", "Measurement", "ProcessUsage", "RunResult", "median_metrics"]

Metrics = dict[str, float]


class ProcessUsage(BaseModel):
    """CPU and memory one OS process used during a run.

    Attributes:
        name: ``bench`` (this process), ``processor-<k>`` or ``worker``.
        roles: what ran in it (``client``, ``processor``, ``worker``).
        pid: its process id.
        cpu_user_s: user CPU seconds during the run.
        cpu_system_s: system CPU seconds during the run.
        cpu_s: ``cpu_user_s + cpu_system_s``.
        peak_rss_mb: the process's peak resident set size (MiB) since it started.
    """

    name: str
    roles: list[str]
    pid: int
    cpu_user_s: float
    cpu_system_s: float
    cpu_s: float
    peak_rss_mb: float


class Measurement(BaseModel):
    """One measured phase of a workload, e.g. W1 throughput.

    Attributes:
        name: ``w1_throughput``, ``w1_latency``, ``w2_sequence``, ``w3_fan_out`` or
            ``w4_entity_counter``.
        workload: the workload it belongs to.
        available: False when the workload cannot run yet (``note`` says why).
        note: why it is unavailable, or a remark on how it was measured.
        metrics: the numbers (counts, seconds, rates per second, latencies in ms).
        cpu_s: CPU seconds each process used during this phase.
    """

    name: str
    workload: Workload
    available: bool = True
    note: str | None = None
    metrics: Metrics = Field(default_factory=dict)
    cpu_s: Metrics = Field(default_factory=dict)


class RunResult(BaseModel):
    """One run on a fresh task hub: metadata, per-process usage, measurements.

    ``load_average`` is the machine's 1, 5 and 15 minute load when the run
    started: on a shared machine, it says how much else was running.
    """

    run: int
    timestamp: str
    durafka_version: str
    #: ``"pure Python"`` or ``"compiled (N modules)"`` (durafka.compiled); empty in
    #: results saved before it was recorded.
    build: str = ""
    python: str
    platform: str
    cpu_count: int
    load_average: list[float]
    transport: str
    bootstrap: str
    task_hub: str
    partitions: int
    processes: dict[str, Any]
    settings: dict[str, Any]
    usage: list[ProcessUsage]
    measurements: dict[str, Measurement]
    seconds: float


class BenchResult(BaseModel):
    """Every run of a benchmark, and the median of each metric over the runs."""

    config: dict[str, Any]
    runs: list[RunResult]
    median: dict[str, Metrics]


def median_metrics(runs: list[RunResult]) -> dict[str, Metrics]:
    """The median of every metric of every available measurement over ``runs``."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, m in run.measurements.items():
            if not m.available:
                continue
            for key, value in m.metrics.items():
                values.setdefault(name, {}).setdefault(key, []).append(value)
    return {
        name: {key: statistics.median(vs) for key, vs in by_key.items()}
        for name, by_key in values.items()
    }
