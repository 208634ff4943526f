"""Run a benchmark: per run, a fresh task hub, the roles, the workloads, the readings."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import durafka
from durafka.app import App
from durafka.bench import drivers, workloads
from durafka.bench.config import BenchConfig, ProcessMode, Workload
from durafka.bench.hosting import EmbeddedHost, Host, SeparateHost, broker_cpu
from durafka.bench.progress import NoProgress, Progress
from durafka.bench.results import BenchResult, Measurement, Metrics, RunResult, median_metrics
from durafka.client import AsyncClient
from durafka.compiled import build_description
from durafka.errors import BenchmarkError
from durafka.settings import Settings
from durafka.topology import HubTopics
from durafka.transport.memory import SCHEME, MemoryBroker

__all__ = ["run_benchmark"]

log = logging.getLogger("durafka.bench")

#: Settings that say where a run happens rather than how fast (and may hold secrets).
_NOT_REPORTED = {
    "task_hub",
    "bootstrap_servers",
    "state_dir",
    "client_config",
    "processor_partitions",
    "use_memory_state",
}


def run_benchmark(
    config: BenchConfig,
    progress: Progress | None = None,
    *,
    on_run: Callable[[RunResult], None] | None = None,
) -> BenchResult:
    """Run ``config.runs`` runs of the selected workloads, each on a fresh task hub.

    Args:
        config: workloads, transport, process layout and settings.
        progress: receives progress (default: none shown).
        on_run: called with each run's result as soon as it is done.

    Returns:
        Every run, and the median of each metric over the runs.

    Raises:
        BenchmarkError: an output was wrong, a role process died, or a workload
            did not finish within ``config.timeout`` seconds.
    """
    runs: list[RunResult] = []
    for index in range(1, config.runs + 1):
        run = _run_once(config, index, progress or NoProgress())
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return BenchResult(
        config=config.model_dump(mode="json"), runs=runs, median=median_metrics(runs)
    )


def _run_once(config: BenchConfig, index: int, progress: Progress) -> RunResult:
    hub = f"{config.hub_prefix}-{uuid.uuid4().hex[:10]}"
    bootstrap = config.new_bootstrap()
    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    load_average = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    label = f"run {index}/{config.runs}: " if config.runs > 1 else ""
    with tempfile.TemporaryDirectory(prefix="durafka-bench-", dir=config.work_dir) as tmp:
        settings = config.settings_for(hub, bootstrap, Path(tmp) / "state")
        app = App(settings=settings)
        app.registry = workloads.app.registry
        try:
            app.ensure_topics()  # before any role starts, so none races to create them
            host: Host
            if config.processes is ProcessMode.SEPARATE:
                host = SeparateHost(settings, config.processors, Path(tmp) / "logs")
            else:
                host = EmbeddedHost(app)
            host.start()
            try:
                broker = broker_cpu(bootstrap) if config.transport == "kafka" else dict

                def cpu() -> dict[str, float]:
                    return {**host.cpu_seconds(), **broker()}

                measurements = asyncio.run(_measure(app, host, cpu, config, progress, label))
                usage = host.usage()
            except BenchmarkError as exc:
                tails = host.log_tails()
                if tails and tails not in str(exc):
                    raise BenchmarkError(f"{exc}\n{tails}") from exc
                raise
            finally:
                host.stop()
        finally:
            app.close()
            _drop_hub(settings, keep_topics=config.keep_topics)
    return RunResult(
        run=index,
        timestamp=timestamp,
        durafka_version=durafka.__version__,
        build=build_description(),
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count() or 0,
        load_average=load_average,
        transport=config.transport,
        bootstrap=bootstrap,
        task_hub=hub,
        partitions=settings.partition_count(),
        processes=host.describe(),
        settings=_reported_settings(settings),
        usage=usage,
        measurements=measurements,
        seconds=round(time.perf_counter() - started, 3),
    )


async def _measure(
    app: App,
    host: Host,
    cpu: Callable[[], dict[str, float]],
    config: BenchConfig,
    progress: Progress,
    label: str,
) -> dict[str, Measurement]:
    out: dict[str, Measurement] = {}
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellation)

    async def phase(name: str, workload: Workload, work: Awaitable[Metrics]) -> None:
        before = cpu()
        metrics = await work
        after = cpu()
        out[name] = Measurement(
            name=name,
            workload=workload,
            metrics={k: _significant(v) for k, v in metrics.items()},
            cpu_s={p: round(after[p] - before.get(p, 0.0), 3) for p in after},
        )

    # Not app.client(): that one shares the app's transport, which on Kafka means
    # confluent-kafka plus a thread hop per start; a standalone AsyncClient speaks
    # aiokafka there, the fastest way this client has to start instances.
    async with AsyncClient(app.settings, app.registry) as client:
        drive = drivers.Drive(
            client, progress, host.check, config.timeout, config.max_in_flight, label
        )
        await drivers.warm_up(drive, config.partitions, config.startup_timeout)
        for workload in config.workloads:
            if workload is Workload.W1:
                await phase("w1_throughput", workload, drivers.hello_throughput(drive, config.w1_n))
                if config.latency_n:
                    await phase(
                        "w1_latency", workload, drivers.hello_latency(drive, config.latency_n)
                    )
            elif workload is Workload.W2:
                await phase(
                    "w2_sequence", workload, drivers.sequence_throughput(drive, config.w2_n)
                )
            elif workload is Workload.W3:
                await phase("w3_fan_out", workload, drivers.fan_out(drive, config.w3_m))
            elif workload is Workload.W4:
                await phase(
                    "w4_entity_counter",
                    workload,
                    drivers.entity_counter(drive, config.w4_counters, config.w4_signals),
                )
    return out


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # On Ctrl-C, thousands of in-flight starts are cancelled, and the client's
    # wait_for(gather(...)) leaves each gather's CancelledError unretrieved: one
    # "exception was never retrieved" report per start says nothing useful.
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def _significant(value: float) -> float:
    """``value`` to 6 significant digits (more is noise; fewer loses small timings)."""
    return float(f"{value:.6g}")


def _reported_settings(settings: Settings) -> dict[str, Any]:
    """Every tuning setting of the run (not where it runs, nor the client config: secrets)."""
    memory_state = settings.use_memory_state
    if memory_state is None:
        memory_state = settings.is_memory
    reported = settings.model_dump(mode="json", exclude=_NOT_REPORTED)
    reported["state_store"] = "memory" if memory_state else "rocksdb"
    return reported


def _drop_hub(settings: Settings, *, keep_topics: bool) -> None:
    """Forget the run's ``memory://`` broker, or delete its Kafka topics and groups."""
    if settings.is_memory:
        MemoryBroker.reset(settings.bootstrap[len(SCHEME) :])
        return
    if keep_topics:
        return
    from durafka.transport.admin import admin_client, delete_topics_and_groups

    hub = settings.task_hub
    admin = admin_client(settings.bootstrap, {"log_level": 4, **settings.client_config})
    # Best effort: a leftover topic costs disk space, not the validity of the results.
    delete_topics_and_groups(
        admin, list(HubTopics(hub).by_key().values()), [f"{hub}.processors", f"{hub}.workers"]
    )
