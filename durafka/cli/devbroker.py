"""``durafka dev-broker``: a local single-node Kafka for development, no Docker needed.

``start`` prints only the bootstrap address on stdout, so
``export DURAFKA_BOOTSTRAP_SERVERS=$(durafka dev-broker start)`` works; everything
else goes to stderr. Without that variable, the commands run from the same
directory find the broker in its default ``--data-dir`` themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.options import (
    DEV_BROKER_DIR,
    LogFormatOption,
    LogLevelOption,
    fail,
    setup_logging,
)
from durafka.dev.broker import DEFAULT_KAFKA_VERSION, LocalBroker, ensure_distribution
from durafka.errors import DurafkaError

app = typer.Typer(
    help="Run a real single-node Apache Kafka broker (KRaft) on 127.0.0.1.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Broker config, log, pid file and topic data.",
        file_okay=False,
    ),
]


@app.command()
def start(
    data_dir: DataDir = DEV_BROKER_DIR,
    port: Annotated[
        int | None, typer.Option(help="Client port (default: previous or a free one).")
    ] = None,
    version: Annotated[str, typer.Option(help="Apache Kafka release.")] = DEFAULT_KAFKA_VERSION,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until it answers.")] = 90.0,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Start the broker (or find it running) and print its bootstrap address."""
    setup_logging(log_level, log_format)
    broker = LocalBroker(data_dir, port=port, version=version)
    typer.echo(f"starting Kafka {version} from {broker.data_dir} ...", err=True)
    try:
        bootstrap = broker.start(timeout=timeout)
    except DurafkaError as exc:
        _fail(exc)
    typer.echo(f"running (pid {broker.status().pid}), log: {broker.log_file}", err=True)
    typer.echo(bootstrap)


@app.command()
def stop(
    data_dir: DataDir = DEV_BROKER_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 20.0,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Stop the broker started from DATA_DIR."""
    setup_logging(log_level, log_format)
    broker = LocalBroker(data_dir)
    pid = broker.status().pid
    if broker.stop(timeout=timeout):
        typer.echo(f"stopped (pid {pid})")
    else:
        typer.echo(f"not running ({broker.data_dir})")


@app.command()
def status(
    data_dir: DataDir = DEV_BROKER_DIR,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Print whether the broker runs; exit code 1 when it does not."""
    setup_logging(log_level, log_format)
    current = LocalBroker(data_dir).status()
    if not current.running:
        typer.echo(f"not running ({current.data_dir})")
        raise typer.Exit(1)
    typer.echo(f"running at {current.bootstrap} (pid {current.pid}), log: {current.log_file}")


@app.command()
def logs(
    data_dir: DataDir = DEV_BROKER_DIR,
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines.")] = 80,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Print the end of the broker log."""
    setup_logging(log_level, log_format)
    typer.echo(LocalBroker(data_dir).log_tail(lines))


@app.command()
def fetch(
    version: Annotated[str, typer.Option(help="Apache Kafka release.")] = DEFAULT_KAFKA_VERSION,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Download the broker with Maven into the cache (once) and print where it is."""
    setup_logging(log_level, log_format)
    try:
        libs = ensure_distribution(version)
    except DurafkaError as exc:
        _fail(exc)
    typer.echo(str(libs))


def _fail(exc: DurafkaError) -> NoReturn:
    fail(str(exc))
