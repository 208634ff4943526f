"""Show a benchmark: a rich progress bar while it runs, tables and JSON when it is done."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgressBar
from rich.table import Table

from durafka.bench.compare import Comparison, format_ratio, format_target, format_value
from durafka.bench.results import BenchResult, Measurement, Metrics, RunResult

__all__ = [
    "RichProgress",
    "breakdown_tables",
    "comparison_table",
    "median_table",
    "run_tables",
    "write_json",
]

_TITLES = {
    "w1_throughput": "W1 throughput",
    "w1_latency": "W1 latency",
    "w2_sequence": "W2 sequence",
    "w3_fan_out": "W3 fan-out",
    "w4_entity_counter": "W4 entities",
}


class RichProgress:
    """A :class:`~durafka.bench.progress.Progress` drawn as a rich progress bar.

    Example:
        >>> with RichProgress(Console(stderr=True)) as progress:
        ...     run_benchmark(config, progress)
    """

    def __init__(self, console: Console) -> None:
        self._bar = RichProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._pending = 0
        self._shown_at = 0.0

    def begin(self, label: str, total: int) -> None:
        """Show a new bar for the phase ``label``."""
        self.end()
        self._task = self._bar.add_task(label, total=total)

    def advance(self, steps: int = 1) -> None:
        """Move the current bar on (passed to rich at most every 50 ms: it is not free)."""
        self._pending += steps
        now = time.monotonic()
        if now - self._shown_at >= 0.05:
            self._show(now)

    def _show(self, now: float) -> None:
        if self._task is not None and self._pending:
            self._bar.advance(self._task, self._pending)
        self._pending = 0
        self._shown_at = now

    def end(self) -> None:
        """Remove the current bar."""
        self._show(time.monotonic())
        if self._task is not None:
            self._bar.remove_task(self._task)
            self._task = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end()
        self._bar.stop()


def _describe(name: str, m: Metrics) -> tuple[str, str, str]:
    """(size, result, wall time) of one measurement, for a table row."""
    if name == "w1_throughput":
        return (
            f"{m['n']:,.0f}",
            f"{m['orchestrations_per_s']:,.0f} orch/s (starts {m['starts_per_s']:,.0f}/s, "
            f"view lag {m.get('view_lag_ms', 0):,.0f} ms)",
            f"{m['seconds']:.2f}",
        )
    if name == "w1_latency":
        return (
            f"{m['n']:,.0f}",
            f"p50 {m['p50_ms']:.1f} / p95 {m['p95_ms']:.1f} / p99 {m['p99_ms']:.1f} ms",
            f"{m['n'] * m['mean_ms'] / 1000:.2f}",
        )
    if name == "w2_sequence":
        return (
            f"{m['n']:,.0f}",
            f"{m['orchestrations_per_s']:,.0f} orch/s, {m['activities_per_s']:,.0f} act/s",
            f"{m['seconds']:.2f}",
        )
    if name == "w3_fan_out":
        return (f"{m['m']:,.0f}", f"{m['activities_per_s']:,.0f} act/s", f"{m['seconds']:.2f}")
    if name == "w4_entity_counter":
        return (
            f"{m['signals']:,.0f}",
            f"{m['signals_per_s']:,.0f} signals/s to {m['counters']:,.0f} counters "
            f"(sends {m['sends_per_s']:,.0f}/s)",
            f"{m['seconds']:.2f}",
        )
    return "", ", ".join(f"{k} {v:,.1f}" for k, v in m.items()), ""


def _row(measurement: Measurement) -> list[str]:
    title = _TITLES.get(measurement.name, measurement.name)
    if not measurement.available:
        return [title, "", f"not available: {measurement.note}", "", ""]
    size, result, wall = _describe(measurement.name, measurement.metrics)
    cpu = ", ".join(f"{p} {s:.1f}" for p, s in measurement.cpu_s.items())
    return [title, size, result, wall, cpu]


def _local(settings: dict[str, Any]) -> str:
    if not settings.get("local_activities"):
        return ""
    return f", local activities (wait {settings.get('local_activity_wait_ms')} ms)"


def run_tables(run: RunResult) -> list[Table]:
    """The results of one run, and the CPU and memory of its processes."""
    s = run.settings
    p = run.processes
    # Only a processor sharing its process with a worker runs activities locally.
    local = _local(s) if p.get("mode") == "embedded" else ""
    layout = (
        "embedded (1 process)"
        if p.get("mode") == "embedded"
        else f"separate: {p.get('processors')} processor + {p.get('workers')} worker processes"
    )
    results = Table(
        title=(
            f"Run {run.run}: {run.transport} ({run.bootstrap}), {run.partitions} partitions, "
            f"{layout}\nbatch {s['batch_size']} records, "
            f"cache {s['cache_size']:,}{local}, {run.cpu_count} cores "
            f"(load {run.load_average[0]:.1f}), "
            f"durafka {run.durafka_version}{f', {run.build}' if run.build else ''}, "
            f"{run.timestamp}"
        ),
        title_justify="left",
    )
    for column in ("workload", "n", "result", "wall s", "CPU s"):
        results.add_column(column, justify="right" if column in ("n", "wall s") else "left")
    for measurement in run.measurements.values():
        results.add_row(*_row(measurement))
    usage = Table(title=f"Run {run.run}: processes", title_justify="left")
    for column in ("process", "roles", "pid", "user s", "sys s", "CPU s", "peak RSS MiB"):
        usage.add_column(column, justify="left" if column in ("process", "roles") else "right")
    for u in run.usage:
        usage.add_row(
            u.name,
            "+".join(u.roles),
            str(u.pid),
            f"{u.cpu_user_s:.1f}",
            f"{u.cpu_system_s:.1f}",
            f"{u.cpu_s:.1f}",
            f"{u.peak_rss_mb:.0f}",
        )
    return [results, usage]


def median_table(result: BenchResult) -> Table:
    """The median of each measurement over the runs."""
    table = Table(title=f"Median of {len(result.runs)} runs", title_justify="left")
    for column in ("workload", "n", "result", "wall s"):
        table.add_column(column, justify="right" if column in ("n", "wall s") else "left")
    for name, metrics in result.median.items():
        table.add_row(_TITLES.get(name, name), *_describe(name, metrics))
    return table


def write_json(result: BenchResult, path: Path) -> None:
    """Write every run and the medians to ``path`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")


def comparison_table(comparison: Comparison) -> Table:
    """durafka against Restate, one sitting: both medians, the ratio and its target."""
    m = comparison.machine
    table = Table(
        title=(
            f"durafka / Restate on {m['cpu_model']}, {m['cores']} cores, "
            f"{m['memory_gib']} GiB (load {m['load_average'][0]:.1f} at the end)"
            + (f"; durafka {m['durafka_build']}" if m.get("durafka_build") else "")
        ),
        title_justify="left",
        caption="* a throughput run under 10 s on a side: its ratio is not stable"
        + (
            f"\ndurafka started {comparison.settle_s:g} s after the peer's last run "
            "(it waits for a quiet machine, two minutes at most)"
            if comparison.settle_s
            else ""
        ),
        caption_justify="left",
    )
    for column in ("workload", "Restate", "durafka", "durafka / Restate", "target"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for row in comparison.rows:
        table.add_row(
            row.title + (" *" if row.short else ""),
            format_value(row.restate, row.unit),
            format_value(row.durafka, row.unit),
            format_ratio(row),
            format_target(row),
        )
    return table


def breakdown_tables(breakdown: dict[str, Any]) -> list[Table]:
    """The hops of one W1 instance (p50 / p99 / mean), and the bare Kafka floors."""
    hops = breakdown["hops"]
    count = hops.get("instances", {})
    table = Table(
        title=(
            f"W1 latency hop by hop: {count.get('complete', 0)} of {count.get('run', 0)} "
            f"instances one at a time, Kafka, {breakdown.get('layout', 'one process')}, "
            f"{breakdown['partitions']} partitions"
        ),
        title_justify="left",
    )
    for column in ("hop", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(column, justify="left" if column == "hop" else "right")
    for hop, values in hops.items():
        if hop != "instances":
            table.add_row(
                hop,
                f"{values['p50_ms']:.2f}",
                f"{values['p99_ms']:.2f}",
                f"{values['mean_ms']:.2f}",
            )
    floors = Table(title="Floors: bare Kafka operations on the same broker", title_justify="left")
    for column in ("operation", "p50 ms", "p99 ms"):
        floors.add_column(column, justify="left" if column == "operation" else "right")
    for name, values in breakdown["floors"].items():
        floors.add_row(name, f"{values['p50_ms']:.2f}", f"{values['p99_ms']:.2f}")
    return [table, floors]
