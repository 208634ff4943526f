"""``durafka topology apply``: create a task hub's topics from its topology spec.

The spec, partition count and replication factor are the ones every role of
the app reads (``DURAFKA_TOPOLOGY``, ``DURAFKA_PARTITIONS``,
``DURAFKA_REPLICATION_FACTOR``; the options win), so ``durafka run`` finds the
hub exactly as it was applied. Clients use ``DURAFKA_CLIENT_CONFIG`` (with its
``admin.`` settings), like every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.options import (
    BootstrapOption,
    HubOption,
    JsonOption,
    LogFormatOption,
    LogLevelOption,
    emit_json,
    failures,
    setup,
)
from durafka.transport.admin import apply_topics

app = typer.Typer(help="Kafka topics of a task hub.", no_args_is_help=True)


@app.command()
def apply(
    hub: HubOption = None,
    bootstrap: BootstrapOption = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="Topology spec (default: DURAFKA_TOPOLOGY, else topology/default.toml).",
            dir_okay=False,
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="Partitions of the co-partitioned topics (default: DURAFKA_PARTITIONS, "
            "else the spec's).",
            min=1,
        ),
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(
            help="Replication factor of every topic (default: DURAFKA_REPLICATION_FACTOR, "
            "else the spec's).",
            min=1,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the topics.")] = 30.0,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOption = False,
) -> None:
    """Create the missing topics of the hub; fail on any topic that differs from the spec."""
    from durafka.transport.kafka import KafkaTransport

    with failures():
        settings = setup(bootstrap, hub, log_level, log_format)
        updates = {
            name: value
            for name, value in (
                ("topology", spec),
                ("partitions", partitions),
                ("replication_factor", replication_factor),
            )
            if value is not None
        }
        settings = settings.model_copy(update=updates)
        specs = settings.topic_specs()
        transport = KafkaTransport(settings.bootstrap, settings.client_config)
        try:
            report = apply_topics(transport.admin(), specs, timeout, cluster=settings.bootstrap)
        finally:
            transport.close()
    by_name = {s.name: s for s in specs}
    if as_json:
        emit_json(
            {
                "task_hub": settings.task_hub,
                "topics": [
                    {
                        "name": s.name,
                        "partitions": s.partitions,
                        "replication_factor": s.replication_factor,
                        "created": s.name in report.created,
                    }
                    for s in specs
                ],
            }
        )
        return
    for name in report.created:
        typer.echo(f"created    {name} (partitions: {by_name[name].partitions})")
    for name in report.unchanged:
        typer.echo(f"unchanged  {name}")
