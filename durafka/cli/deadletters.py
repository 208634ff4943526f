"""``durafka dead-letters list | show | redrive``: what no processor or worker could use.

A dead letter is named ``<partition>:<offset>`` (where it sits on
``H.dead-letters``). ``redrive`` re-produces selected dead letters to their source
topic after a fix, each at most once (:mod:`durafka.redrive` says how).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from durafka.app import App
from durafka.cli.apps import AppArg, load_app
from durafka.codec.records import decode_activity_task, decode_message, event_to_dict
from durafka.errors import DurafkaError
from durafka.redrive import DeadLetterEntry, read_dead_letters, redrive
from durafka.topology import HubTopics
from durafka.transport.client_config import for_client

app = typer.Typer(help="Dead letters of a task hub: list, show, redrive.", no_args_is_help=True)

#: Bytes of a value shown by ``show`` (``--value-bytes`` changes it).
PREVIEW_BYTES = 512

SourceOption = Annotated[
    str | None,
    typer.Option(
        help="Only dead letters from this source topic (full name, or the part after the "
        "hub: orchestrations, activities, state-changelog)."
    ),
]


def _entries(the_app: App, source: str | None) -> list[DeadLetterEntry]:
    try:
        entries = read_dead_letters(the_app.transport, the_app.settings.task_hub)
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if source is None:
        return entries
    wanted = {source, f"{the_app.settings.task_hub}.{source}"}
    return [e for e in entries if e.letter is not None and e.letter["source_topic"] in wanted]


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(data: bytes | None, limit: int) -> str | None:
    """``data`` as text if it is UTF-8 (cut at ``limit`` bytes), else as hex."""
    if data is None:
        return None
    head = data[:limit]
    try:
        text = head.decode()
    except UnicodeDecodeError:
        return "hex:" + head.hex() + ("..." if len(data) > limit else "")
    return text + ("..." if len(data) > limit else "")


def _summary(entry: DeadLetterEntry) -> dict[str, Any]:
    letter = entry.letter
    if letter is None:
        return {"id": entry.id, "error": entry.error}
    return {
        "id": entry.id,
        "failed_at": _time(letter["failed_at"]),
        "source": f"{letter['source_topic']}[{letter['source_partition']}]"
        f"@{letter['source_offset']}",
        "key": _text(letter["key"], 80),
        "reason": letter["reason"],
        "redriven": entry.redriven,
    }


@app.command("list")
def list_(
    app_spec: AppArg,
    source: SourceOption = None,
    limit: Annotated[int, typer.Option(help="Show the last N at most (0: all).", min=0)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the dead letters of APP's task hub: id, time, source, key, reason."""
    entries = _entries(load_app(app_spec), source)
    if limit:
        entries = entries[-limit:]
    for entry in entries:
        row = _summary(entry)
        if as_json:
            typer.echo(json.dumps(row))
            continue
        if "error" in row:
            typer.echo(f"{row['id']:<10} (does not decode: {row['error']})")
            continue
        reason = row["reason"] if len(row["reason"]) <= 100 else row["reason"][:97] + "..."
        mark = " [redriven]" if row["redriven"] else ""
        typer.echo(
            f"{row['id']:<10} {row['failed_at']}  {row['source']:<36} "
            f"key={row['key']!r}  {reason}{mark}"
        )
    if not as_json:
        typer.echo(f"{len(entries)} dead letters", err=True)


def _decoded(letter: dict[str, Any], topics: HubTopics) -> Any:
    """The record's value decoded, when it is one of the input topics' records."""
    value = letter["value"]
    if value is None or "value" in letter["truncated"]:
        return None
    try:
        if letter["source_topic"] == topics.orchestrations:
            instance_id, event = decode_message(value)
            return {"instance_id": instance_id, "event": _plain(event_to_dict(event))}
        if letter["source_topic"] == topics.activities:
            return _plain(vars(decode_activity_task(value)))
    except DurafkaError as exc:
        return f"does not decode: {exc}"
    except Exception as exc:  # a value that decodes into nonsense
        return f"does not decode: {type(exc).__name__}: {exc}"
    return None


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _text(v, PREVIEW_BYTES) if isinstance(v, bytes) else v for k, v in d.items()}


@app.command()
def show(
    app_spec: AppArg,
    dead_letter: Annotated[str, typer.Argument(help="Its id, <partition>:<offset>.")],
    value_bytes: Annotated[
        int, typer.Option(help="Bytes of the value to show.", min=0)
    ] = PREVIEW_BYTES,
) -> None:
    """Show one dead letter as JSON: reason, source, key, headers, value preview, sizes."""
    the_app = load_app(app_spec)
    found = [e for e in _entries(the_app, None) if e.id == dead_letter]
    if not found:
        typer.echo(f"no dead letter {dead_letter} on {the_app.settings.task_hub}", err=True)
        raise typer.Exit(1)
    entry = found[0]
    letter = entry.letter
    if letter is None:
        typer.echo(json.dumps({"id": entry.id, "error": entry.error}, indent=2))
        return
    sha = letter["value_sha256"]
    shown = {
        **_summary(entry),
        "headers": {h["key"]: _text(h["value"], 200) for h in letter["headers"]},
        "value_preview": _text(letter["value"], value_bytes),
        "value": _decoded(letter, HubTopics(the_app.settings.task_hub)),
        "key_size": letter["key_size"],
        "value_size": letter["value_size"],
        "value_sha256": None if sha is None else sha.hex(),
        "truncated": letter["truncated"],
        "source_timestamp": _time(letter["source_timestamp"]),
        "durafka_version": letter["durafka_version"],
        "written_by": letter["written_by"],
        "redrivable": entry.not_redrivable(HubTopics(the_app.settings.task_hub)) is None,
    }
    typer.echo(json.dumps(shown, indent=2, default=str))


@app.command("redrive")
def redrive_(
    app_spec: AppArg,
    dead_letters: Annotated[
        list[str] | None, typer.Argument(help="Ids (<partition>:<offset>) to redrive.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every dead letter that can be redriven.")
    ] = False,
    source: SourceOption = None,
) -> None:
    """Produce dead letters again to their source topic, each at most once.

    Exit code 1 when any was refused (the reason is printed).
    """
    the_app = load_app(app_spec)
    topics = HubTopics(the_app.settings.task_hub)
    ids = list(dead_letters or [])
    if all_:
        ids += [e.id for e in _entries(the_app, source) if e.not_redrivable(topics) is None]
    elif source is not None:
        raise typer.BadParameter("--source selects with --all only")
    if not ids:
        typer.echo("nothing to redrive", err=True)
        return
    try:
        outcomes = redrive(
            the_app.transport,
            the_app.settings.task_hub,
            ids,
            **for_client(the_app.settings.client_config, "producer"),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except DurafkaError as exc:
        typer.echo(f"error: nothing was redriven: {exc}", err=True)
        raise typer.Exit(2) from None
    for outcome in outcomes:
        if outcome.refused is None:
            typer.echo(f"redriven {outcome.id} -> {outcome.target}")
        else:
            typer.echo(f"refused  {outcome.id}: {outcome.refused}", err=True)
    if any(o.refused is not None for o in outcomes):
        raise typer.Exit(1)
