"""``durafka topology``: create a task hub's topics from a spec in ``topology/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from durafka.errors import DurafkaError
from durafka.topology import load_hub_spec
from durafka.transport.admin import admin_client, apply_topics

app = typer.Typer(help="Kafka topics of a task hub.", no_args_is_help=True)


@app.command()
def apply(
    hub: Annotated[str, typer.Option(help="Task hub name (topic prefix).")] = "durafka",
    bootstrap: Annotated[
        str, typer.Option(envvar="DURAFKA_BOOTSTRAP", help="Kafka bootstrap servers.")
    ] = "127.0.0.1:9092",
    spec: Annotated[
        Path | None,
        typer.Option(help="Topology spec (default: topology/default.toml).", dir_okay=False),
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="Partition count of the co-partitioned topics.", min=1)
    ] = None,
    replication_factor: Annotated[
        int | None, typer.Option(help="Replication factor of every topic.", min=1)
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 30.0,
) -> None:
    """Create the missing topics of HUB; fail on any topic that differs from the spec."""
    try:
        specs = load_hub_spec(
            hub, spec, partitions=partitions, replication_factor=replication_factor
        )
        report = apply_topics(admin_client(bootstrap), specs, timeout, cluster=bootstrap)
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    by_name = {s.name: s for s in specs}
    for name in report.created:
        typer.echo(f"created    {name} (partitions: {by_name[name].partitions})")
    for name in report.unchanged:
        typer.echo(f"unchanged  {name}")
