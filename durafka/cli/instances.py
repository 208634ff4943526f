"""``durafka instances quarantined``: instances whose stored state could not be decoded.

The processor fails such an instance with an ``InstanceQuarantinedError`` (see
:mod:`durafka.processor.quarantine`); this lists them from the status view, with
the reason. Their stored values are on the dead-letter topic (``durafka
dead-letters list APP --source state-changelog``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from durafka.cli.apps import AppArg, load_app
from durafka.errors import DurafkaError, InstanceQuarantinedError
from durafka.status import OrchestrationStatus, RuntimeStatus

app = typer.Typer(help="Instances of a task hub.", no_args_is_help=True)


def is_quarantined(status: OrchestrationStatus) -> bool:
    """Whether the processor quarantined this instance (and it was not started again)."""
    details = status.failure_details
    return (
        status.runtime_status is RuntimeStatus.FAILED
        and details is not None
        and details.is_caused_by(InstanceQuarantinedError)
    )


@app.command()
def quarantined(
    app_spec: AppArg,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the quarantined instances of APP: id, name, when, reason."""
    found: list[OrchestrationStatus] = []
    try:
        with load_app(app_spec).sync_client() as client:
            continuation: str | None = None
            while True:
                page = client.list_instances(
                    status=RuntimeStatus.FAILED, page_size=1000, continuation=continuation
                )
                found.extend(s for s in page.items if is_quarantined(s))
                continuation = page.continuation
                if continuation is None:
                    break
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for status in found:
        reason = status.failure_details.message if status.failure_details else ""
        row = {
            "instance_id": status.instance_id,
            "name": status.name,
            "quarantined_at": status.last_updated_at.isoformat(),
            "reason": reason,
        }
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(f"{status.instance_id}  {status.name or '-'}  {row['quarantined_at']}")
            typer.echo(f"    {reason}")
    if not as_json:
        typer.echo(f"{len(found)} quarantined instances", err=True)
