"""Management commands: ``list``, ``history``, ``terminate``, ``raise-event``, ``suspend``,
``resume``, ``purge``, ``restart``, ``rewind``, ``reset``, ``entities ...``, ``partitions``,
``topology describe|diff``.

Each parses its arguments, calls :class:`~durafka.management.Management` and
prints the result: a table for people, or with ``--json`` the same JSON the HTTP
API returns. Bad input (an invalid id, JSON that does not parse, an unknown
status) is refused before anything is sent; errors print one line and exit 1 (2 for
wrong settings, such as no cluster to work on).

The task hub comes from ``--app`` (the app's settings and registry, which also
checks orchestration and entity names and input types), ``--hub`` and
``--bootstrap`` (or ``DURAFKA_*`` variables), else a dev broker started with
``durafka dev-broker start`` in this directory: the rule of every command
(:func:`~durafka.cli.options.with_cluster`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel

from durafka.cli.apps import checked_id
from durafka.cli.logs import LogFormat, LogLevel, configure_logging
from durafka.cli.options import CliError, LogFormatOption, LogLevelOption, load_app, with_cluster
from durafka.codec.history_json import dumps_history
from durafka.errors import DurafkaError
from durafka.ids import check_entity_parts
from durafka.management import Management
from durafka.management.models import ClusterInfo, HistoryEntry, InstanceAt, TopologyReport
from durafka.settings import Settings

__all__ = ["entities_app", "open_management", "register", "topology_commands"]

AppOpt = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="The app as module:attribute: its settings, and its registry to check names "
        "and inputs.",
    ),
]
HubOpt = Annotated[
    str | None,
    typer.Option("--hub", envvar="DURAFKA_TASK_HUB", help="Task hub (topic prefix)."),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        envvar=["DURAFKA_BOOTSTRAP_SERVERS", "DURAFKA_BOOTSTRAP"],
        help="Kafka bootstrap servers (or memory:// in tests); default: "
        "DURAFKA_BOOTSTRAP_SERVERS, else the dev broker running from this directory.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the HTTP API's shapes).")]
ContinuationOpt = Annotated[
    str | None, typer.Option("--continuation", help="The token a previous page printed.")
]

T = TypeVar("T")


def resolve_settings(
    app: str | None, hub: str | None, bootstrap: str | None
) -> tuple[Settings, Any]:
    """The settings and registry a management command works with.

    Bootstrap servers by the rule every command follows
    (:func:`~durafka.cli.options.with_cluster`): ``--bootstrap`` (or its variables),
    else the app's settings when they name servers, else the dev broker running
    from this directory. An in-process ``memory://`` broker is used only when
    named: an empty one would show nothing and take commands that go nowhere.

    Raises:
        CliError: no bootstrap servers are configured and no dev broker runs.
    """
    the_app = load_app(app) if app is not None else None
    settings = the_app.settings if the_app is not None else Settings(**{})
    registry = the_app.registry if the_app is not None else None
    changes: dict[str, Any] = {}
    if hub is not None:
        changes["task_hub"] = hub
    if bootstrap is not None:
        changes["bootstrap_servers"] = bootstrap
    return with_cluster(settings.model_copy(update=changes)), registry


def open_management(app: str | None, hub: str | None, bootstrap: str | None) -> Management:
    """A :class:`Management` for the command's options (see :func:`resolve_settings`)."""
    settings, registry = resolve_settings(app, hub, bootstrap)
    return Management(settings, registry)


@contextmanager
def managing(
    app: str | None,
    hub: str | None,
    bootstrap: str | None,
    log_level: LogLevel = LogLevel.INFO,
    log_format: LogFormat = LogFormat.TEXT,
) -> Iterator[Management]:
    """:func:`open_management` for a ``with`` block; durafka errors print one line, exit 1."""
    configure_logging(log_level, log_format)
    try:
        management = open_management(app, hub, bootstrap)
    except (DurafkaError, ValueError) as exc:
        fail(exc)
    try:
        yield management
    except (DurafkaError, ValueError) as exc:
        fail(exc)
    finally:
        management.close()


def fail(exc: BaseException) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit 1 (a :class:`CliError`: its exit code)."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code if isinstance(exc, CliError) else 1)


def emit(value: BaseModel | Sequence[BaseModel] | dict[str, Any], as_json: bool, text: str) -> None:
    """Print ``value`` as JSON with ``--json``, else ``text``."""
    if as_json:
        if isinstance(value, BaseModel):
            data: Any = value.model_dump(mode="json")
        elif isinstance(value, dict):
            data = value
        else:
            data = [v.model_dump(mode="json") for v in value]
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif text:
        typer.echo(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows in aligned columns under their headers."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def parse_json(text: str | None, param: str) -> Any:
    """A JSON argument (None stays None), else a usage error naming ``param``."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=param) from None


def parse_time(text: str | None, param: str) -> datetime | None:
    """An ISO 8601 time with a zone (``2026-01-02T03:04:05+00:00`` or ``...Z``)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=param) from None
    if when.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no time zone (add Z or +00:00)", param_hint=param)
    return when


def checked_entity(name: str, key: str) -> tuple[str, str]:
    """``(name, key)`` if they make a valid entity id, else a usage error."""
    try:
        check_entity_parts(name, key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME KEY") from None
    return name, key


IdArg = Annotated[str, typer.Argument(help="Instance id.", show_default=False)]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")]

# -- instances -------------------------------------------------------------------------------


def list_(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only this runtime status (repeat for several)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only this orchestration.")] = None,
    id_prefix: Annotated[
        str | None, typer.Option("--id-prefix", help="Only ids starting with this.")
    ] = None,
    created_from: Annotated[
        str | None, typer.Option("--from", help="Created at or after (ISO 8601, with zone).")
    ] = None,
    created_to: Annotated[
        str | None, typer.Option("--to", help="Created before (ISO 8601, with zone).")
    ] = None,
    newest_first: Annotated[bool, typer.Option("--newest-first", help="Newest first.")] = False,
    page_size: Annotated[int, typer.Option("--page-size", min=1, max=10_000)] = 100,
    continuation: ContinuationOpt = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """List instances, a page at a time (oldest first unless --newest-first)."""
    start, end = parse_time(created_from, "--from"), parse_time(created_to, "--to")
    with managing(app, hub, bootstrap, log_level, log_format) as m:
        page = m.list_instances(
            status=[s.upper() for s in status] if status else None,
            name=name,
            created_from=start,
            created_to=end,
            id_prefix=id_prefix,
            descending=newest_first,
            page_size=page_size,
            continuation=continuation,
        )
        rows = [
            (i.instance_id, i.name, i.status.value, i.created_at, i.last_updated_at)
            for i in page.items
        ]
        text = table(("INSTANCE ID", "NAME", "STATUS", "CREATED", "UPDATED"), rows)
        if page.continuation:
            text += f"\nmore: --continuation {page.continuation}"
        emit(page, as_json, text)


def history(
    instance_id: IdArg,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Show the instance as it was at this time (ISO 8601, with zone): status, "
            "custom status, pending calls, history so far, from the changelog.",
        ),
    ] = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: the history in the format durafka.testing.replay loads "
            "(with --at: the instance as it was, the API's shape).",
        ),
    ] = False,
) -> None:
    """Print an instance's history (its current generation), oldest event first.

    With --json the output is a history file for replay tests
    (``durafka.testing.replay(app, text)``): keep it next to your tests. The #
    column is the event index ``durafka reset --to-event`` takes.
    """
    checked_id(instance_id, "INSTANCE_ID")
    when = parse_time(at, "--at")
    with managing(app, hub, bootstrap, log_level, log_format) as m:
        if when is not None:
            past = m.instance_at(instance_id, when)
            emit(past, as_json, _past_text(past))
            return
        m.get_instance(instance_id)
        events = m.history_events(instance_id)
        if as_json:
            typer.echo(dumps_history(events))
            return
        typer.echo(_history_table([HistoryEntry.of(e) for e in events]))


def _history_table(entries: Sequence[HistoryEntry]) -> str:
    rows = [
        (
            n,
            e.timestamp,
            e.kind.value,
            "" if e.seq < 0 else e.seq,
            e.name or "",
            _short(e.failure.message if e.failure else e.payload),
        )
        for n, e in enumerate(entries)
    ]
    return table(("#", "TIME", "EVENT", "SEQ", "NAME", "DETAIL"), rows)


def _past_text(past: InstanceAt) -> str:
    i = past.instance
    lines = [f"{i.instance_id} at {past.at}: {i.status.value} ({i.name})"]
    if past.status_from == "history":
        lines.append("  (its header of that time was compacted away: status inferred from history)")
    if not past.complete:
        lines.append("  (the beginning of its history of that time was compacted away)")
    if i.custom_status is not None:
        lines.append(f"  custom status: {_short(i.custom_status)}")
    if i.failure is not None:
        lines.append(f"  failure: {i.failure.error_type}: {i.failure.message}")
    for span in past.pending:
        target = f" {span.target}" if span.target else ""
        lines.append(f"  waiting for {span.kind} {span.name or ''}{target} (#{span.seq})")
    lines.append("")
    lines.append(_history_table(past.history))
    return "\n".join(lines)


def _short(value: Any, width: int = 60) -> str:
    text = "" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _action(
    instance_id: str,
    app: str | None,
    hub: str | None,
    bootstrap: str | None,
    logs: tuple[LogLevel, LogFormat],
    as_json: bool,
    run: Callable[[Management], Any],
    done: str,
) -> None:
    checked_id(instance_id, "INSTANCE_ID")
    with managing(app, hub, bootstrap, *logs) as m:
        result = run(m)
        extra = {"execution_id": result} if isinstance(result, str) else {}
        emit({"instance_id": instance_id, "accepted": True, **extra}, as_json, done)


def terminate(
    instance_id: IdArg,
    reason: ReasonOpt = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Terminate a pending, running or suspended instance (and its children)."""
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.terminate(instance_id, reason),
        f"terminating {instance_id}",
    )


def raise_event(
    instance_id: IdArg,
    event_name: Annotated[str, typer.Argument(help="Event name.", show_default=False)],
    data: Annotated[str | None, typer.Argument(help="Event data as JSON.")] = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Send an external event (ctx.wait_for_external_event) to a running instance."""
    value = parse_json(data, "DATA")
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.raise_event(instance_id, event_name, value),
        f"raised {event_name!r} on {instance_id}",
    )


def suspend(
    instance_id: IdArg,
    reason: ReasonOpt = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Suspend a pending or running instance (events wait until it resumes)."""
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.suspend(instance_id, reason),
        f"suspending {instance_id}",
    )


def resume(
    instance_id: IdArg,
    reason: ReasonOpt = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Resume a suspended instance."""
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.resume(instance_id, reason),
        f"resuming {instance_id}",
    )


def purge(
    instance_id: IdArg,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Delete a finished instance: its history, state and status."""
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.purge(instance_id),
        f"purging {instance_id}",
    )


def restart(
    instance_id: IdArg,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Run a finished instance again: a new execution, same id, name and input."""
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.restart(instance_id),
        f"restarting {instance_id}",
    )


def rewind(
    instance_id: IdArg,
    reason: ReasonOpt = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Put a failed instance back to running: the calls that failed it run again.

    Only failures of activities and sub-orchestrations can be rewound (failed
    children are rewound too); everything that succeeded is kept.
    """
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.rewind(instance_id, reason),
        f"rewinding {instance_id}",
    )


def reset(
    instance_id: IdArg,
    to_event: Annotated[
        int,
        typer.Option(
            "--to-event",
            min=1,
            help="Keep the events before this index (the # column of `durafka history`).",
            show_default=False,
        ),
    ],
    reason: ReasonOpt = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Run an instance again from an event of its history: a new execution with the current code.

    The events before --to-event are replayed; what came after runs again
    (activities at least once more; external events are delivered again). A
    running execution ends Terminated with the reason "reset".
    """
    _action(
        instance_id,
        app,
        hub,
        bootstrap,
        (log_level, log_format),
        as_json,
        lambda m: m.reset(instance_id, to_event, reason),
        f"resetting {instance_id} to event {to_event}",
    )


def partitions(
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=0.0,
            help="Seconds between two samples, to tell active from stalled partitions.",
        ),
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Owner, committed offset, end offset, lag and state of every input partition."""
    import time

    with managing(app, hub, bootstrap, log_level, log_format) as m:
        if interval > 0:
            m.cluster.sample()
            time.sleep(interval)
        info = m.partitions()
        emit(info, as_json, _partitions_text(info))


def _partitions_text(info: ClusterInfo) -> str:
    rows = [
        (p.topic, p.partition, p.owner or "-", p.committed, p.end, p.lag, p.state)
        for p in info.partitions
    ]
    head = (
        f"task hub {info.task_hub} on {info.bootstrap}: {len(info.processors)} processor(s), "
        f"{len(info.workers)} worker(s)"
    )
    return head + "\n" + table(("TOPIC", "P", "OWNER", "COMMITTED", "END", "LAG", "STATE"), rows)


# -- entities --------------------------------------------------------------------------------

entities_app = typer.Typer(help="Entities: list, read, signal, delete.", no_args_is_help=True)


@entities_app.command("list")
def entities_list(
    name: Annotated[str | None, typer.Option("--name", help="Only entities of this name.")] = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1, max=10_000)] = 100,
    continuation: Annotated[str | None, typer.Option("--continuation")] = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """List entities that have a state, ordered by id."""
    with managing(app, hub, bootstrap, log_level, log_format) as m:
        page = m.list_entities(name=name, page_size=page_size, continuation=continuation)
        rows = [
            (e.entity_id, _short(e.state), e.last_modified_at, e.locked_by or "")
            for e in page.items
        ]
        text = table(("ENTITY", "STATE", "MODIFIED", "LOCKED BY"), rows)
        if page.continuation:
            text += f"\nmore: --continuation {page.continuation}"
        emit(page, as_json, text)


EntityName = Annotated[str, typer.Argument(help="Entity name.", show_default=False)]
EntityKey = Annotated[str, typer.Argument(help="Entity key.", show_default=False)]


@entities_app.command("get")
def entities_get(
    name: EntityName,
    key: EntityKey,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Print an entity's state and lock."""
    checked_entity(name, key)
    with managing(app, hub, bootstrap, log_level, log_format) as m:
        entity = m.get_entity(name, key)
        text = json.dumps(entity.model_dump(mode="json"), indent=2, ensure_ascii=False)
        emit(entity, as_json, text)


@entities_app.command("signal")
def entities_signal(
    name: EntityName,
    key: EntityKey,
    operation: Annotated[str, typer.Argument(help="Operation.", show_default=False)],
    input: Annotated[str | None, typer.Argument(help="Input as JSON.")] = None,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Send a one-way operation to an entity."""
    checked_entity(name, key)
    value = parse_json(input, "INPUT")
    with managing(app, hub, bootstrap, log_level, log_format) as m:
        m.signal_entity(name, key, operation, value)
        emit(
            {"entity_id": f"@{name}@{key}", "accepted": True},
            as_json,
            f"signalled {operation!r} to @{name}@{key}",
        )


@entities_app.command("delete")
def entities_delete(
    name: EntityName,
    key: EntityKey,
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Delete an entity's state."""
    checked_entity(name, key)
    with managing(app, hub, bootstrap, log_level, log_format) as m:
        m.delete_entity(name, key)
        emit({"entity_id": f"@{name}@{key}", "accepted": True}, as_json, f"deleting @{name}@{key}")


# -- topology describe | diff ----------------------------------------------------------------

SpecOpt = Annotated[
    Path | None,
    typer.Option("--spec", help="Topology spec (default: topology/default.toml).", dir_okay=False),
]
PartitionsOpt = Annotated[
    int | None,
    typer.Option("--partitions", min=1, help="Partition count of the co-partitioned topics."),
]
ReplicationOpt = Annotated[
    int | None, typer.Option("--replication-factor", min=1, help="Replication factor.")
]


def _report(
    app: str | None,
    hub: str | None,
    bootstrap: str | None,
    spec: Path | None,
    partitions: int | None,
    replication_factor: int | None,
    logs: tuple[LogLevel, LogFormat],
) -> TopologyReport:
    with managing(app, hub, bootstrap, *logs) as m:
        return m.topology(spec, partitions=partitions, replication_factor=replication_factor)


def describe(
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    spec: SpecOpt = None,
    partitions: PartitionsOpt = None,
    replication_factor: ReplicationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the task hub's topics as the broker has them, next to the spec."""
    report = _report(
        app, hub, bootstrap, spec, partitions, replication_factor, (log_level, log_format)
    )
    rows = [
        (
            t.name,
            t.partitions if t.exists else "missing",
            t.replication_factor if t.exists else "",
            t.expected_partitions,
            ", ".join(f"{k}={v}" for k, v in sorted(t.config.items())),
        )
        for t in report.topics
    ]
    text = table(("TOPIC", "PARTITIONS", "REPLICATION", "SPEC PARTITIONS", "CONFIG"), rows)
    emit(report, as_json, text)


def diff(
    app: AppOpt = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    spec: SpecOpt = None,
    partitions: PartitionsOpt = None,
    replication_factor: ReplicationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every difference between the broker and the spec; exit 1 when there is one."""
    report = _report(
        app, hub, bootstrap, spec, partitions, replication_factor, (log_level, log_format)
    )
    lines = [d for t in report.topics for d in t.differences]
    emit(report, as_json, "\n".join(lines) if lines else "in sync with the spec")
    if not report.in_sync:
        raise typer.Exit(1)


def topology_commands(topology_app: typer.Typer) -> None:
    """Add ``describe`` and ``diff`` to the ``durafka topology`` group."""
    topology_app.command("describe")(describe)
    topology_app.command("diff")(diff)


def register(cli: typer.Typer) -> None:
    """Add the management commands to the top-level CLI."""
    cli.command("list")(list_)
    for fn in (history, terminate, suspend, resume, purge, restart, rewind, reset, partitions):
        cli.command()(fn)
    cli.command("raise-event")(raise_event)
    cli.add_typer(entities_app, name="entities")
