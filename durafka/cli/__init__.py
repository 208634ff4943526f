"""The ``durafka`` command line.

Each command group lives in its own module under ``durafka.cli`` as a
``typer.Typer`` named ``app`` and is mounted here with ``add_typer``.
"""

from __future__ import annotations

import typer

from durafka.cli import (
    apps,
    bench,
    deadletters,
    deploy,
    devbroker,
    export,
    manage,
    replaycheck,
    serve,
    topology,
)

app = typer.Typer(
    name="durafka",
    help="Durable functions for Python, event-sourced over Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(devbroker.app, name="dev-broker")
app.add_typer(topology.app, name="topology")
app.add_typer(deploy.app, name="deploy")
app.add_typer(export.app, name="export")
app.add_typer(deadletters.app, name="dead-letters")
apps.register(app)
manage.register(app)
replaycheck.register(app)
serve.register(app)
manage.topology_commands(topology.app)
bench.register(app)


def main() -> None:
    """Entry point of the ``durafka`` console script."""
    app()


if __name__ == "__main__":
    main()
