"""``durafka bench``: measure durafka on ``memory://`` or a Kafka broker (docs/performance.md)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.options import (
    BootstrapOption,
    LogFormatOption,
    LogLevelOption,
    fail,
    failures,
    settings,
    setup_logging,
)
from durafka.errors import DurafkaError

# durafka.bench is imported only when the command runs: every other command
# (e.g. the role processes the benchmark starts) stays free of it.
_ALL = ("W1", "W2", "W3", "W4")


def _workloads(names: list[str]) -> tuple[str, ...]:
    chosen: set[str] = set()
    for name in names or ["all"]:
        upper = name.upper()
        if upper == "ALL":
            chosen.update(_ALL)
        elif upper in _ALL:
            chosen.add(upper)
        else:
            raise typer.BadParameter(f"{name!r} is not one of W1, W2, W3, W4, all")
    return tuple(sorted(chosen))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the role processes are stopped on the way out.
    # Inside asyncio.run() the SIGINT handler is asyncio's, which cancels the running
    # workload cleanly; elsewhere it is Python's, which raises KeyboardInterrupt.
    on_sigint = signal.getsignal(signal.SIGINT)
    if callable(on_sigint):
        on_sigint(signum, frame)  # asyncio's returns once it cancelled; Python's raises
        return
    raise KeyboardInterrupt


def bench(
    workloads: Annotated[
        list[str] | None, typer.Argument(help="W1, W2, W3, W4 or all (default: all).")
    ] = None,
    transport: Annotated[
        str, typer.Option(help="memory (embedded broker) or kafka.", case_sensitive=False)
    ] = "memory",
    bootstrap: BootstrapOption = None,
    hub: Annotated[
        str, typer.Option("--hub", help="Prefix of each run's task hub, <prefix>-<id>.")
    ] = "bench",
    n: Annotated[
        int | None,
        typer.Option(
            "--n", help="Instances of W1 throughput and W2 (default 20,000 / 5,000).", min=1
        ),
    ] = None,
    m: Annotated[int, typer.Option("--m", help="Activities fanned out by W3.", min=1)] = 1_000,
    latency_n: Annotated[
        int, typer.Option(help="W1 latency: instances run one at a time (0: skip).", min=0)
    ] = 500,
    counters: Annotated[int, typer.Option(help="W4: entity counters.", min=1)] = 100,
    signals: Annotated[int, typer.Option(help="W4: signals in total.", min=1)] = 10_000,
    partitions: Annotated[int, typer.Option(help="Partitions of the task hub.", min=1)] = 8,
    processes: Annotated[
        str, typer.Option(help="embedded (roles on threads here) or separate (child processes).")
    ] = "embedded",
    processors: Annotated[
        int, typer.Option(help="Processor processes (separate mode).", min=1)
    ] = 1,
    runs: Annotated[int, typer.Option(help="Runs, each on a fresh task hub.", min=1)] = 1,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every run and the medians here.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Processor batch size (default: durafka's).", min=1)
    ] = None,
    cache_size: Annotated[
        int | None, typer.Option(help="Live orchestrations cached (default: durafka's).", min=0)
    ] = None,
    max_concurrent_activities: Annotated[
        int | None, typer.Option(help="Worker concurrency (default: durafka's).", min=1)
    ] = None,
    max_in_flight: Annotated[
        int, typer.Option(help="Client starts awaiting acknowledgement at once.", min=1)
    ] = 1_000,
    timeout: Annotated[float, typer.Option(help="Seconds a workload may take at most.")] = 600.0,
    keep_topics: Annotated[
        bool, typer.Option(help="Leave each run's Kafka topics on the broker.")
    ] = False,
    log_level: LogLevelOption = LogLevel.WARNING,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Run the benchmark workloads of issue 4 and print (and optionally save) the results.

    W1 hello (throughput of N instances, then latency one at a time), W2 a
    5-step sequence, W3 a fan-out of M activities, W4 signals to entity
    counters. Every output is verified; each run uses a fresh task hub.
    """
    from rich.console import Console

    from durafka.bench.config import BenchConfig
    from durafka.bench.report import RichProgress, median_table, run_tables, write_json
    from durafka.bench.results import RunResult
    from durafka.bench.runner import run_benchmark

    setup_logging(log_level, log_format)
    if bootstrap is None and transport.lower() == "kafka":
        with failures():
            bootstrap = settings(None, None).bootstrap_servers
    try:
        # Validated from a dict: pydantic turns the option strings into the config's enums.
        config = BenchConfig.model_validate(
            {
                "workloads": _workloads(workloads or []),
                "transport": transport.lower(),
                "processes": processes.lower(),
                "bootstrap": bootstrap,
                "hub_prefix": hub,
                "latency_n": latency_n,
                "w3_m": m,
                "w4_counters": counters,
                "w4_signals": signals,
                "partitions": partitions,
                "processors": processors,
                "runs": runs,
                "batch_size": batch_size,
                "cache_size": cache_size,
                "max_concurrent_activities": max_concurrent_activities,
                "max_in_flight": max_in_flight,
                "timeout": timeout,
                "keep_topics": keep_topics,
                **({"w1_n": n, "w2_n": n} if n is not None else {}),
            }
        )
    except ValidationError as exc:
        raise typer.BadParameter(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None

    console = Console()

    def show(run: RunResult) -> None:
        for table in run_tables(run):
            console.print(table)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with RichProgress(Console(stderr=True)) as progress:
            result = run_benchmark(config, progress, on_run=show)
    except KeyboardInterrupt:
        typer.echo("interrupted; the role processes were stopped", err=True)
        raise typer.Exit(130) from None
    except DurafkaError as exc:
        fail(str(exc))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if runs > 1:
        console.print(median_table(result))
    if json_path is not None:
        write_json(result, json_path)
        typer.echo(f"results written to {json_path}", err=True)


def register(cli: typer.Typer) -> None:
    """Add ``durafka bench`` to the top-level CLI."""
    cli.command()(bench)
