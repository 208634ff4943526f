"""``durafka dead-letters list | show | redrive | quarantined``: what durafka could not use.

A dead letter is named ``<partition>:<offset>`` (where it sits on
``H.dead-letters``). ``redrive`` produces selected dead letters again to their
source topic after a fix, each at most once (:mod:`durafka.management.redrive`
says how). ``quarantined`` lists the instances whose stored state did not
decode (their stored values are dead letters too). The options are those of the
other management commands (:mod:`durafka.cli.manage`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.manage import (
    AppOpt,
    BootstrapOpt,
    ContinuationOpt,
    HubOpt,
    JsonOpt,
    emit,
    managing,
    table,
)
from durafka.cli.options import LogFormatOption, LogLevelOption

app = typer.Typer(
    help="Dead letters: list, show, redrive; quarantined instances.", no_args_is_help=True
)

#: Characters of a reason a table row shows.
REASON_WIDTH = 90


def _short(text: str | None, width: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 3] + "..."


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Per page.")] = 50,
    continuation: ContinuationOpt = None,
    app_spec: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """List the newest dead letters, a page at a time: id, time, source, key, reason."""
    with managing(app_spec, hub, bootstrap, log_level, log_format) as m:
        page = m.dead_letters(limit=limit, continuation=continuation)
        rows = [
            (
                d.id,
                d.failed_at,
                f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
                _short(d.key, 40),
                _short(d.reason, REASON_WIDTH),
            )
            for d in page.items
        ]
        text = table(("ID", "FAILED AT", "SOURCE", "KEY", "REASON"), rows)
        if page.continuation:
            text += f"\nmore: --continuation {page.continuation}"
        emit(page, as_json, text)


DeadLetterArg = Annotated[
    str, typer.Argument(help="Dead letter id, <partition>:<offset>.", show_default=False)
]


@app.command()
def show(
    dead_letter: DeadLetterArg,
    app_spec: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter: reason, source, key, headers, value, sizes, whether redriven."""
    with managing(app_spec, hub, bootstrap, log_level, log_format) as m:
        info = m.dead_letter(dead_letter)
        text = json.dumps(info.model_dump(mode="json"), indent=2, ensure_ascii=False)
        emit(info, as_json, text)


@app.command()
def redrive(
    dead_letters: Annotated[
        list[str], typer.Argument(help="Dead letter ids, <partition>:<offset>.")
    ],
    app_spec: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Produce dead letters again to their source topic, each at most once.

    Exit code 1 when any was refused (the reason is printed).
    """
    with managing(app_spec, hub, bootstrap, log_level, log_format) as m:
        outcomes = m.redrive(dead_letters)
        lines = [
            f"redriven {o.id} -> {o.target}"
            if o.refused is None
            else f"refused  {o.id}: {o.refused}"
            for o in outcomes
        ]
        emit(outcomes, as_json, "\n".join(lines))
    if any(o.refused is not None for o in outcomes):
        raise typer.Exit(1)


@app.command()
def quarantined(
    app_spec: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """List the instances quarantined because their stored state did not decode."""
    with managing(app_spec, hub, bootstrap, log_level, log_format) as m:
        found = m.quarantined()
        rows = [
            (q.instance_id, q.name, q.quarantined_at, _short(q.reason, REASON_WIDTH)) for q in found
        ]
        emit(found, as_json, table(("INSTANCE ID", "NAME", "QUARANTINED AT", "REASON"), rows))
