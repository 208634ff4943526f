"""``durafka bench``: measure durafka on ``memory://`` or a Kafka broker (docs/performance.md)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

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
    with_cluster,
)
from durafka.errors import DurafkaError

if TYPE_CHECKING:
    from rich.console import Console

    from durafka.bench.config import BenchConfig

# durafka.bench is imported only when the command runs: every other command
# (e.g. the role processes the benchmark starts) stays free of it.
_ALL = ("W1", "W2", "W3", "W4")
_MODES = ("COMPARE", "BREAKDOWN")
#: durafka's sizes in ``compare`` mode: each throughput run lasts 10 s or more here.
_COMPARE_W1_N = 80_000
_COMPARE_W2_N = 40_000
_COMPARE_W3_M = 200  # the peer's fan-out


def _mode(names: list[str]) -> str | None:
    modes = {name.upper() for name in names} & set(_MODES)
    if not modes:
        return None
    if len(names) > 1:
        raise typer.BadParameter(f"{names[0]!r} is a mode of its own: give no workload with it")
    return modes.pop()


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
        list[str] | None,
        typer.Argument(
            help="W1, W2, W3, W4 or all (default: all); or compare (against the Restate "
            "peer, one sitting) or breakdown (W1 latency hop by hop)."
        ),
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
            "--n",
            help="Instances of W1 throughput and W2 (default 20,000 / 5,000; compare: "
            f"{_COMPARE_W1_N:,} / {_COMPARE_W2_N:,}).",
            min=1,
        ),
    ] = None,
    n2: Annotated[
        int | None, typer.Option("--n2", help="Instances of W2 (default: as --n).", min=1)
    ] = None,
    m: Annotated[
        int | None,
        typer.Option(
            "--m",
            help=f"Activities fanned out by W3 (default 1,000; compare {_COMPARE_W3_M}).",
            min=1,
        ),
    ] = None,
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
    peers: Annotated[
        Path | None,
        typer.Option(help="compare: the peers folder (default: ../shared/peers of the repo)."),
    ] = None,
    peer_workdir: Annotated[
        Path | None,
        typer.Option(help="compare: where the peer is installed and run (default .durafka/peers)."),
    ] = None,
    peer_n_hello: Annotated[
        int, typer.Option(help="compare: the peer's W1 instances.", min=1)
    ] = 10_000,
    peer_n_seq: Annotated[
        int, typer.Option(help="compare: the peer's W2 instances.", min=1)
    ] = 5_000,
    peer_results: Annotated[
        Path | None,
        typer.Option(help="compare: use this peer results.json instead of running the peer."),
    ] = None,
    log_level: LogLevelOption = LogLevel.WARNING,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Run the benchmark workloads of issue 4 and print (and optionally save) the results.

    W1 hello (throughput of N instances, then latency one at a time), W2 a
    5-step sequence, W3 a fan-out of M activities, W4 signals to entity
    counters. Every output is verified; each run uses a fresh task hub.

    ``durafka bench compare --transport kafka --runs 3`` runs the Restate peer
    (``--peers``), then durafka's W1, W1 latency, W2 and W3, and prints both
    and their ratios. ``durafka bench breakdown --transport kafka`` times each
    hop of one-at-a-time W1 instances (with ``--processes separate``, through a
    processor process and a worker process, from the records' timestamps).
    """
    from rich.console import Console

    from durafka.bench.config import BenchConfig
    from durafka.bench.report import RichProgress, median_table, run_tables, write_json
    from durafka.bench.results import RunResult
    from durafka.bench.runner import run_benchmark

    setup_logging(log_level, log_format)
    mode = _mode(workloads or [])
    if mode is not None:
        transport = "kafka"  # the peer's and the breakdown's numbers are about Kafka
    if bootstrap is None and transport.lower() == "kafka":
        with failures():
            bootstrap = with_cluster(settings(None, None)).bootstrap_servers
    try:
        # Validated from a dict: pydantic turns the option strings into the config's enums.
        config = BenchConfig.model_validate(
            {
                "workloads": ("W1", "W2", "W3") if mode else _workloads(workloads or []),
                "transport": transport.lower(),
                "processes": processes.lower(),
                "bootstrap": bootstrap,
                "hub_prefix": hub,
                "latency_n": latency_n,
                "w3_m": m or (_COMPARE_W3_M if mode == "COMPARE" else 1_000),
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
                **({"w1_n": _COMPARE_W1_N, "w2_n": _COMPARE_W2_N} if mode == "COMPARE" else {}),
                **({"w1_n": n, "w2_n": n} if n is not None else {}),
                **({"w2_n": n2} if n2 is not None else {}),
            }
        )
    except ValidationError as exc:
        raise typer.BadParameter(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None

    console = Console()
    if mode == "COMPARE":
        _compare(
            config,
            console,
            json_path,
            peers=peers,
            peer_workdir=peer_workdir,
            peer_n_hello=peer_n_hello,
            peer_n_seq=peer_n_seq,
            peer_results=peer_results,
        )
        return
    if mode == "BREAKDOWN":
        _breakdown(config, console, json_path)
        return

    def show(run: RunResult) -> None:
        for table in run_tables(run):
            console.print(table)

    with _interruptible(), RichProgress(Console(stderr=True)) as progress:
        result = run_benchmark(config, progress, on_run=show)
    if runs > 1:
        console.print(median_table(result))
    if json_path is not None:
        write_json(result, json_path)
        typer.echo(f"results written to {json_path}", err=True)


def _compare(
    config: BenchConfig,
    console: Console,
    json_path: Path | None,
    *,
    peers: Path | None,
    peer_workdir: Path | None,
    peer_n_hello: int,
    peer_n_seq: int,
    peer_results: Path | None,
) -> None:
    from rich.console import Console

    from durafka.bench.compare import default_peers_dir, run_comparison
    from durafka.bench.report import RichProgress, comparison_table

    with _interruptible(), RichProgress(Console(stderr=True)) as progress:
        comparison = run_comparison(
            config,
            peers_dir=peers or default_peers_dir(),
            peer_work_dir=peer_workdir or Path(".durafka/peers/restate").resolve(),
            peer_runs=config.runs,
            peer_n_hello=peer_n_hello,
            peer_n_seq=peer_n_seq,
            peer_results=peer_results,
            progress=progress,
        )
    console.print(comparison_table(comparison))
    _write(json_path, comparison.to_json())


def _breakdown(config: BenchConfig, console: Console, json_path: Path | None) -> None:
    from rich.console import Console

    from durafka.bench.breakdown import run_breakdown
    from durafka.bench.report import RichProgress, breakdown_tables

    with _interruptible(), RichProgress(Console(stderr=True)) as progress:
        breakdown = run_breakdown(config, progress)
    for table in breakdown_tables(breakdown):
        console.print(table)
    _write(json_path, breakdown)


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C; an interrupt or a durafka error ends the command cleanly."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("interrupted; the role processes were stopped", err=True)
        raise typer.Exit(130) from None
    except DurafkaError as exc:
        fail(str(exc))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write(json_path: Path | None, data: Any) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        typer.echo(f"results written to {json_path}", err=True)


def register(cli: typer.Typer) -> None:
    """Add ``durafka bench`` to the top-level CLI."""
    cli.command()(bench)
