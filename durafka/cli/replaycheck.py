"""``durafka replay-check APP``: replay every running instance against APP's code first.

Exit status 0 when every history replays, 1 when any instance would fail (and
on errors): a pre-deploy gate for CI (README, "Changing running code").
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from durafka.cli.apps import parse_partitions
from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.manage import BootstrapOpt, HubOpt, JsonOpt, emit, managing, parse_time
from durafka.cli.options import LogFormatOption, LogLevelOption
from durafka.management.models import ReplayCheckReport
from durafka.management.replaycheck import ReplayCheckProgress

__all__ = ["register", "replay_check"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | None, param: str) -> timedelta | None:
    """``90s``, ``30m``, ``24h``, ``7d`` as a timedelta (None stays None)."""
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if match is None:
        raise typer.BadParameter(
            f"not a duration: {text!r} (a number and s, m, h or d, e.g. 24h)", param_hint=param
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def replay_check(
    app: Annotated[
        str,
        typer.Argument(
            help="The app with the code about to be deployed, as module:attribute.",
            show_default=False,
        ),
    ],
    finished_within: Annotated[
        str | None,
        typer.Option(
            "--finished-within",
            help="Also check instances that finished within this long (e.g. 24h, 7d).",
        ),
    ] = None,
    finished_since: Annotated[
        str | None,
        typer.Option(
            "--finished-since",
            help="Also check instances that finished at or after this time (ISO 8601, with zone).",
        ),
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option("--partitions", help="Only these changelog partitions, e.g. 0-3,6."),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")
    ] = True,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Replay the history of every running instance against APP's code; exit 1 if any would fail.

    Reads the histories from the changelog topic a partition at a time and runs
    only the orchestrators (no activity runs, nothing is written).
    """
    if finished_within is not None and finished_since is not None:
        raise typer.BadParameter(
            "give --finished-within or --finished-since, not both", param_hint="--finished-within"
        )
    since = parse_time(finished_since, "--finished-since")
    within = parse_duration(finished_within, "--finished-within")
    if within is not None:
        since = datetime.now(UTC) - within
    numbers = parse_partitions(partitions)
    console = Console(stderr=True)
    with (
        managing(app, hub, bootstrap, log_level, log_format) as m,
        Progress(
            TextColumn("[bold]replay-check[/] {task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not progress or not console.is_terminal,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("reading", total=None)
        last = [0.0]

        def on_progress(p: ReplayCheckProgress) -> None:
            now = time.monotonic()
            if now - last[0] < 0.1 and p.partitions_done < p.partitions:
                return
            last[0] = now
            bar.update(
                task,
                total=p.partitions,
                completed=p.partitions_done,
                description=(
                    f"p{p.partition} {_percent(p.records, p.offsets)} · "
                    f"{p.checked:,} replayed · {p.would_fail:,} would fail"
                ),
            )

        report = m.replay_check(finished_since=since, partitions=numbers, on_progress=on_progress)
    emit(report, as_json, _text(report))
    if report.would_fail:
        raise typer.Exit(1)


def _percent(done: int, total: int) -> str:
    """How far the current partition's read is (offsets include transaction markers)."""
    return f"{min(100, 100 * done // total) if total else 100}%"


def _text(report: ReplayCheckReport) -> str:
    since = f" (and finished since {report.finished_since})" if report.finished_since else ""
    lines = [
        f"{report.checked:,} histories replayed{since} from {report.partitions} partitions "
        f"({report.records:,} records) in {report.seconds:.1f}s: "
        + (f"{report.would_fail:,} would fail" if report.would_fail else "all replay")
    ]
    for g in report.groups:
        version = f" version {g.version}" if g.version else ""
        where = g.location or "(no place in the orchestrator's code)"
        lines.append("")
        head = f"{g.orchestration}{version}: {g.count:,} instances, {g.error_type} at {where}"
        lines.append(head)
        for f in g.instances:
            if f.recorded is not None:
                now = f.new if f.new is not None else "no call"
                lines.append(
                    f"  {f.instance_id} ({f.status.value if f.status else '?'}): #{f.seq} "
                    f"recorded {f.recorded}, now {now}"
                )
            else:
                lines.append(f"  {f.instance_id}: {f.message}")
        if g.count > len(g.instances):
            lines.append(f"  ... and {g.count - len(g.instances):,} more")
    return "\n".join(lines)


def register(cli: typer.Typer) -> None:
    """Add ``replay-check`` to the top-level CLI."""
    cli.command("replay-check")(replay_check)
