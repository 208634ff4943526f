"""``durafka export status``: a task hub's statuses as a Parquet or JSON Lines file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.options import BootstrapOption, LogFormatOption, LogLevelOption, failures, setup
from durafka.errors import DurafkaError
from durafka.export import ExportFormat, export_status

app = typer.Typer(help="A task hub's topics as files for SQL engines.", no_args_is_help=True)


@app.command()
def status(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The file to write.", dir_okay=False)
    ] = Path("status.parquet"),
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="parquet (needs pyarrow) or jsonl.")
    ] = ExportFormat.PARQUET,
    hub: Annotated[
        str | None, typer.Option(help="Task hub (default: DURAFKA_TASK_HUB, else durafka).")
    ] = None,
    bootstrap: BootstrapOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to read H.status at most.")] = 60.0,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Write the latest status of every instance (one row each) to a file.

    Query it with DuckDB, e.g. duckdb -c "SELECT name, runtime_status, count(*)
    FROM 'status.parquet' GROUP BY ALL". Other settings (client_config for
    security) come from DURAFKA_* variables.
    """
    with failures():
        settings = setup(bootstrap, hub, log_level, log_format)
    try:
        rows = export_status(settings, output, fmt, timeout=timeout)
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {rows} statuses of task hub {settings.task_hub!r} to {output}")
