"""``durafka bench``: the workloads of issue 4, measured on ``memory://`` or Kafka.

Example:
    >>> from durafka.bench import BenchConfig, Workload, run_benchmark
    >>> result = run_benchmark(BenchConfig(workloads=(Workload.W1,), w1_n=2_000))
    >>> result.runs[0].measurements["w1_throughput"].metrics["orchestrations_per_s"]

See docs/performance.md for what each workload measures and how.
"""

from durafka.bench.config import BenchConfig, ProcessMode, Workload
from durafka.bench.progress import NoProgress, Progress
from durafka.bench.results import BenchResult, Measurement, ProcessUsage, RunResult
from durafka.bench.runner import run_benchmark

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Measurement",
    "NoProgress",
    "ProcessMode",
    "ProcessUsage",
    "Progress",
    "RunResult",
    "Workload",
    "run_benchmark",
]
