"""``durafka bench compare``: durafka against the Restate peer, in one sitting, as ratios.

Absolute numbers move 2x between machines (and on a shared machine, between
hours): what is reported is the ratio of durafka to the peer measured back to
back on the same machine. The peer runs from the peers folder
(``../shared/peers/restate/run.sh``, see its README): Restate 1.7 with its
Python SDK, fsync on, at ``--n-hello`` / ``--n-seq`` instances; then durafka
runs W1 (throughput and one-at-a-time latency), W2 and W3 on Kafka in one
process after its warm-up. Both sides' throughput runs should last 10 s or
more: a row whose run was shorter says so.

Between the sides the machine is let settle (:func:`wait_for_quiet`): the
peer's server flushes and compacts after its last run, and durafka measured
right after it ran about 10% below its own runs of the same sitting.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from durafka.bench.config import BenchConfig
from durafka.bench.progress import Progress
from durafka.bench.results import BenchResult, Metrics
from durafka.bench.runner import run_benchmark
from durafka.compiled import build_description
from durafka.errors import BenchmarkError

__all__ = [
    "MIN_SECONDS",
    "Comparison",
    "Row",
    "compare",
    "default_peers_dir",
    "durafka_metrics",
    "machine",
    "peer_metrics",
    "run_comparison",
    "run_restate",
    "wait_for_quiet",
]

#: A throughput run shorter than this gives no stable ratio (issue 17).
MIN_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class _Line:
    """How one row of the comparison is read from both sides, and its target."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    target: float | None
    """durafka / Restate must be at least this (higher is better) or at most this."""


_LINES: tuple[_Line, ...] = (
    _Line("w1_per_s", "W1 hello throughput", "orch/s", True, 8.0),
    _Line("w1_p50_ms", "W1 latency p50, one at a time", "ms", False, 0.7),
    _Line("w1_p99_ms", "W1 latency p99, one at a time", "ms", False, 1.0),
    _Line("w2_per_s", "W2 5-step sequence", "orch/s", True, 4.0),
    _Line("w3_act_per_s", "W3 fan-out", "act/s", True, 5.0),
    _Line("w1_cpu_ms", "busy CPU per W1 instance", "ms", False, 1 / 15),
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One workload's numbers on both sides.

    Attributes:
        key: the metric's id, e.g. ``w1_per_s``.
        title: what it measures.
        unit: of both numbers.
        restate: the peer's median.
        durafka: durafka's median.
        ratio: ``durafka / restate``.
        higher_is_better: whether a ratio above 1 favours durafka.
        target: the ratio issue 17 asks for (``None``: no target).
        met: whether the ratio meets the target (``None``: no target or no number).
        short: a throughput run lasted under :data:`MIN_SECONDS` on a side.
    """

    key: str
    title: str
    unit: str
    restate: float | None
    durafka: float | None
    ratio: float | None
    higher_is_better: bool
    target: float | None
    met: bool | None
    short: bool = False


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The comparison of one sitting: the machine, every row, and both sides' raw results."""

    machine: dict[str, Any]
    rows: list[Row]
    restate: dict[str, Any]
    durafka: dict[str, Any]
    settle_s: float = 0.0
    """How long the machine took to quieten between the sides."""

    def to_json(self) -> dict[str, Any]:
        """Everything, as JSON-ready data."""
        return {
            "machine": self.machine,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "settle_s": self.settle_s,
            "restate": self.restate,
            "durafka": self.durafka,
        }


def default_peers_dir() -> Path:
    """``../shared/peers`` relative to the repository this durafka is imported from."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "peers"


def machine() -> dict[str, Any]:
    """This machine's CPU model, cores, memory and OS, durafka's build, load and time now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil ships with the bench extra
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count() or 0,
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "durafka_build": build_description(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_restate(
    peers_dir: Path,
    work_dir: Path,
    *,
    runs: int,
    n_hello: int,
    n_seq: int,
    workloads: Sequence[str] = ("w1a", "w1b", "w2", "w3"),
) -> dict[str, Any]:
    """Run the Restate peer (``restate/run.sh``) and return its ``results.json``.

    Its output goes to this process's stderr as it runs.

    Raises:
        BenchmarkError: the peers folder has no Restate peer, or its run failed.
    """
    script = peers_dir / "restate" / "run.sh"
    if not script.is_file():
        raise BenchmarkError(
            f"no Restate peer at {script}: pass --peers with the folder holding restate/run.sh"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    results = work_dir / "results.json"
    results.unlink(missing_ok=True)
    command = [
        str(script),
        str(work_dir),
        "--runs",
        str(runs),
        "--n-hello",
        str(n_hello),
        "--n-seq",
        str(n_seq),
        "--workloads",
        ",".join(workloads),
    ]
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0 or not results.is_file():
        raise BenchmarkError(
            f"the Restate peer failed (exit {done.returncode}): {' '.join(command)}"
        )
    data: dict[str, Any] = json.loads(results.read_text())
    return data


def _busy_percent() -> float:
    """The whole machine's busy CPU over the next second, in percent of all cores."""
    import psutil

    return float(psutil.cpu_percent(interval=1.0))


def wait_for_quiet(
    *,
    below_percent: float = 15.0,
    samples: int = 5,
    max_seconds: float = 120.0,
    busy_percent: Callable[[], float] = _busy_percent,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait until the machine is quiet: ``samples`` readings in a row below ``below_percent``.

    Gives up after ``max_seconds`` (a machine busy with something else stays
    busy; the comparison then runs anyway, and its load average says so).

    Args:
        below_percent: busy CPU, in percent of all cores, that counts as quiet.
        samples: consecutive quiet readings needed (``busy_percent`` takes one
            second each by default).
        max_seconds: the longest wait.
        busy_percent: takes one reading.
        clock: monotonic seconds.

    Returns:
        The seconds waited.
    """
    started = clock()
    quiet = 0
    while quiet < samples and clock() - started < max_seconds:
        quiet = quiet + 1 if busy_percent() < below_percent else 0
    return clock() - started


def _median(summary: Any) -> float | None:
    if isinstance(summary, Mapping) and "median" in summary:
        return float(summary["median"])
    return None


def peer_metrics(results: Mapping[str, Any]) -> Metrics:
    """The comparison's metrics from a peer's ``results.json`` (``benchlib.run_suite``)."""
    out: Metrics = {}
    for key, name in (
        ("w1_per_s", "w1a_hello_throughput_per_s"),
        ("w1_p50_ms", "w1b_latency_p50_ms"),
        ("w1_p99_ms", "w1b_latency_p99_ms"),
        ("w2_per_s", "w2_seq5_throughput_per_s"),
        ("w3_act_per_s", "w3_fanout_activities_per_s"),
    ):
        value = _median(results.get(name))
        if value is not None:
            out[key] = value
    params = results.get("params", {})
    n_hello = params.get("n_hello")
    runs = results.get("w1a_cpu") or []
    if n_hello and runs:
        # Every process of the peer: server, service, client (benchlib's groups).
        per_run = [
            sum(v for k, v in run.items() if k.endswith("_cpu_s")) / n_hello * 1000 for run in runs
        ]
        out["w1_cpu_ms"] = statistics.median(per_run)
        out["w1_seconds"] = statistics.median(run["wall_s"] for run in runs)
    n_seq = params.get("n_seq")
    if n_seq and "w2_per_s" in out:
        out["w2_seconds"] = n_seq / out["w2_per_s"]
    return out


def durafka_metrics(result: BenchResult) -> Metrics:
    """The comparison's metrics from durafka's benchmark result (medians over its runs).

    The busy CPU per W1 instance adds up every process of the W1 throughput
    phase: the benchmark's (client, and the roles when embedded), the role
    processes, and the broker when it runs on this machine.
    """
    m = result.median
    out: Metrics = {}
    for key, phase, name in (
        ("w1_per_s", "w1_throughput", "orchestrations_per_s"),
        ("w1_seconds", "w1_throughput", "seconds"),
        ("w1_p50_ms", "w1_latency", "p50_ms"),
        ("w1_p99_ms", "w1_latency", "p99_ms"),
        ("w2_per_s", "w2_sequence", "orchestrations_per_s"),
        ("w2_seconds", "w2_sequence", "seconds"),
        ("w3_act_per_s", "w3_fan_out", "activities_per_s"),
    ):
        if name in m.get(phase, {}):
            out[key] = m[phase][name]
    per_run = []
    for run in result.runs:
        w1 = run.measurements.get("w1_throughput")
        if w1 is not None and w1.available:
            per_run.append(sum(w1.cpu_s.values()) / w1.metrics["n"] * 1000)
    if per_run:
        out["w1_cpu_ms"] = statistics.median(per_run)
    return out


def compare(restate: Metrics, durafka: Metrics) -> list[Row]:
    """Every row of the comparison: both numbers, their ratio, and whether it meets its target."""
    rows = []
    for line in _LINES:
        r, d = restate.get(line.key), durafka.get(line.key)
        ratio = d / r if r and d is not None else None
        met = None
        if ratio is not None and line.target is not None:
            met = ratio >= line.target if line.higher_is_better else ratio <= line.target
        short = False
        if line.key in ("w1_per_s", "w2_per_s"):
            seconds = line.key.replace("_per_s", "_seconds")
            short = any(
                side.get(seconds) is not None and side[seconds] < MIN_SECONDS
                for side in (restate, durafka)
            )
        rows.append(
            Row(
                key=line.key,
                title=line.title,
                unit=line.unit,
                restate=r,
                durafka=d,
                ratio=ratio,
                higher_is_better=line.higher_is_better,
                target=line.target,
                met=met,
                short=short,
            )
        )
    return rows


def format_ratio(row: Row) -> str:
    """``3.1x`` for a throughput, ``0.85x`` for a latency or a cost (lower is better)."""
    if row.ratio is None:
        return "-"
    if row.ratio < 0.1 or (row.target is not None and row.target < 0.1):
        return f"1/{1 / row.ratio:.1f}"
    return f"{row.ratio:.2f}x"


def format_target(row: Row) -> str:
    """The target and whether it is met, e.g. ``>= 8x: met``."""
    if row.target is None:
        return ""
    sign = ">=" if row.higher_is_better else "<="
    target = f"1/{1 / row.target:.0f}" if row.target < 0.1 else f"{row.target:g}x"
    verdict = "" if row.met is None else (": met" if row.met else ": not met")
    return f"{sign} {target}{verdict}"


def format_value(value: float | None, unit: str) -> str:
    """A number for the table: thousands separated, ms with one or two decimals."""
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    return f"{value:,.0f} {unit}"


def run_comparison(
    config: BenchConfig,
    *,
    peers_dir: Path,
    peer_work_dir: Path,
    peer_runs: int,
    peer_n_hello: int,
    peer_n_seq: int,
    peer_results: Path | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Run the Restate peer, then (once the machine is quiet) durafka, and compare them.

    Args:
        config: durafka's side: W1, W2, W3 on Kafka.
        peers_dir: the folder holding ``restate/run.sh``.
        peer_work_dir: where the peer is installed and run.
        peer_runs: the peer's runs of each workload (it reports the median).
        peer_n_hello: the peer's W1 instances.
        peer_n_seq: the peer's W2 instances.
        peer_results: a ``results.json`` of an earlier peer run to use instead
            of running the peer (its numbers are then not from this sitting).
        progress: receives durafka's progress.

    Raises:
        BenchmarkError: either side failed.
    """
    settle_s = 0.0
    if peer_results is not None:
        restate: dict[str, Any] = json.loads(peer_results.read_text())
    else:
        restate = run_restate(
            peers_dir, peer_work_dir, runs=peer_runs, n_hello=peer_n_hello, n_seq=peer_n_seq
        )
        settle_s = wait_for_quiet()
    result = run_benchmark(config, progress)
    return Comparison(
        machine=machine(),
        rows=compare(peer_metrics(restate), durafka_metrics(result)),
        restate=restate,
        durafka=result.model_dump(mode="json"),
        settle_s=round(settle_s, 1),
    )
