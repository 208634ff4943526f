"""``durafka deploy plan | check``: static partition ranges for processor pods."""

from __future__ import annotations

from typing import Annotated

import typer

from durafka.deploy import coverage_problems, plan_ranges
from durafka.errors import DurafkaError
from durafka.settings import Settings

app = typer.Typer(help="Static partition ranges of processor pods.", no_args_is_help=True)

PartitionsOption = Annotated[
    int | None,
    typer.Option(
        help="Partitions of the hub's co-partitioned topics (default: DURAFKA_PARTITIONS).",
        min=1,
    ),
]


def _partitions(given: int | None) -> int:
    return given if given is not None else Settings(**{}).partitions  # DURAFKA_PARTITIONS


@app.command()
def plan(
    pods: Annotated[int, typer.Option(help="How many processor pods.", min=1)],
    partitions: PartitionsOption = None,
) -> None:
    """Print one ``--partitions`` range per pod, covering every partition exactly once."""
    try:
        for text in plan_ranges(_partitions(partitions), pods):
            typer.echo(text)
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def check(
    ranges: Annotated[list[str], typer.Argument(help="The pods' ranges, e.g. 0-5 6-11.")],
    partitions: PartitionsOption = None,
) -> None:
    """Check that RANGES cover every partition exactly once (exit 1 if not)."""
    n = _partitions(partitions)
    try:
        problems = coverage_problems(ranges, n)
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if problems:
        for problem in problems:
            typer.echo(f"problem: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {len(ranges)} ranges cover the {n} partitions exactly once")
