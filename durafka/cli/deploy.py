"""``durafka deploy plan | check``: static partition ranges for processor pods."""

from __future__ import annotations

from typing import Annotated

import typer

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.options import LogFormatOption, LogLevelOption, fail, settings, setup_logging
from durafka.deploy import coverage_problems, plan_ranges
from durafka.errors import DurafkaError

app = typer.Typer(help="Static partition ranges of processor pods.", no_args_is_help=True)

PartitionsOption = Annotated[
    int | None,
    typer.Option(
        help=(
            "Partitions of the hub's co-partitioned topics (default: DURAFKA_PARTITIONS, "
            "else the topology spec's)."
        ),
        min=1,
    ),
]


def _partitions(given: int | None) -> int:
    # DURAFKA_PARTITIONS, else DURAFKA_TOPOLOGY's (or the default spec's) count.
    return given if given is not None else settings(None, None).partition_count()


@app.command()
def plan(
    pods: Annotated[int, typer.Option(help="How many processor pods.", min=1)],
    partitions: PartitionsOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Print one ``--partitions`` range per pod, covering every partition exactly once."""
    setup_logging(log_level, log_format)
    try:
        for text in plan_ranges(_partitions(partitions), pods):
            typer.echo(text)
    except DurafkaError as exc:
        fail(str(exc), 2)


@app.command()
def check(
    ranges: Annotated[list[str], typer.Argument(help="The pods' ranges, e.g. 0-5 6-11.")],
    partitions: PartitionsOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Check that RANGES cover every partition exactly once (exit 1 if not)."""
    setup_logging(log_level, log_format)
    try:
        n = _partitions(partitions)
        problems = coverage_problems(ranges, n)
    except DurafkaError as exc:
        fail(str(exc), 2)
    if problems:
        for problem in problems:
            typer.echo(f"problem: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {len(ranges)} ranges cover the {n} partitions exactly once")
