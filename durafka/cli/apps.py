"""``durafka run | processor | worker | start | status``: commands on an app.

Run its roles (hosted by :class:`~durafka.hosting.Runner`), start and inspect
its instances.

``APP`` is ``module:attribute`` naming a :class:`durafka.App`, e.g. ``examples.hello:app``.
Settings come from ``DURAFKA_*`` variables (e.g. ``DURAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import signal
import sys
from typing import Annotated, Any

import typer

from durafka.app import App
from durafka.client._common import ClientCore
from durafka.deploy import parse_partition_list
from durafka.errors import (
    ConfigurationError,
    DurafkaError,
    InvalidInstanceIdError,
    PayloadTooLargeError,
    SerializationError,
    UnknownFunctionError,
)
from durafka.ids import check_orchestration_id

AppArg = Annotated[
    str, typer.Argument(help="The app as module:attribute, e.g. examples.hello:app.")
]


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and return the :class:`App` it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise typer.BadParameter(f"{spec!r} is not module:attribute (e.g. examples.hello:app)")
    if "" not in sys.path:
        sys.path.insert(0, "")
    app = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(app, App):
        raise typer.BadParameter(f"{spec} is not a durafka.App")
    return app


def parse_partitions(text: str | None) -> list[int] | None:
    """``"0-3,6"`` -> ``[0, 1, 2, 3, 6]``; None when not given."""
    if not text:
        return None
    try:
        return parse_partition_list(text)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None


def checked_id(instance_id: str, param: str) -> str:
    """``instance_id`` if it obeys the id rules (:mod:`durafka.ids`), else a usage error."""
    try:
        return check_orchestration_id(instance_id)
    except InvalidInstanceIdError as exc:
        raise typer.BadParameter(str(exc), param_hint=param) from None


def _serve(app: App, *, processor: bool, worker: bool, partitions: str | None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        runner = app.runner(
            processor=processor, worker=worker, partitions=parse_partitions(partitions)
        )
    except DurafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    runner.start()
    typer.echo(
        f"durafka: serving task hub {app.settings.task_hub!r} on {app.settings.bootstrap_servers} "
        f"(processor={processor}, worker={worker}); Ctrl-C to stop",
        err=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        runner.wait()
    try:
        runner.stop()
    except DurafkaError as exc:
        # The role logged its traceback; the exit code and one line are for the supervisor.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def run(
    app: AppArg,
    partitions: Annotated[str | None, typer.Option(help="Static partitions, e.g. 0-3.")] = None,
) -> None:
    """Run a processor and an activity worker for APP in this process."""
    _serve(load_app(app), processor=True, worker=True, partitions=partitions)


def processor(
    app: AppArg,
    partitions: Annotated[str | None, typer.Option(help="Static partitions, e.g. 0-3.")] = None,
) -> None:
    """Run a processor for APP (consumer group, or a static partition range)."""
    _serve(load_app(app), processor=True, worker=False, partitions=partitions)


def worker(app: AppArg) -> None:
    """Run an activity worker for APP."""
    _serve(load_app(app), processor=False, worker=True, partitions=None)


def start(
    app: AppArg,
    name: Annotated[str, typer.Argument(help="Orchestration name.")],
    input: Annotated[str, typer.Argument(help="Input as JSON.")] = "null",
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (default: random).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for completion and print the output.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 60.0,
) -> None:
    """Start an orchestration instance of APP; print its id (and output with --wait)."""
    if instance_id is not None:
        checked_id(instance_id, "--id")
    the_app = load_app(app)
    try:
        value: Any = json.loads(input)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"input is not JSON: {exc}") from exc
    try:
        # The checks start_new makes, before connecting: a typo or an input of the wrong
        # shape is a usage error, not an instance that fails in the processor.
        ClientCore(the_app.settings, the_app.registry).prepare_start(name, value, instance_id)
    except (UnknownFunctionError, SerializationError, PayloadTooLargeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    with the_app.sync_client() as client:
        iid = client.start_new(name, value, instance_id=instance_id)
        typer.echo(iid)
        if wait:
            status = client.wait_for_status(iid, timeout=timeout)
            typer.echo(
                json.dumps(
                    {
                        "status": status.runtime_status.value,
                        "output": status.output,
                        "failure": status.failure_details.message
                        if status.failure_details
                        else None,
                    }
                )
            )


def status(app: AppArg, instance_id: Annotated[str, typer.Argument(help="Instance id.")]) -> None:
    """Print the status of one instance of APP as JSON."""
    checked_id(instance_id, "INSTANCE_ID")
    with load_app(app).sync_client() as client:
        st = client.get_status(instance_id)
        if st is None:
            typer.echo(f"no instance {instance_id!r}", err=True)
            raise typer.Exit(1)
        typer.echo(
            json.dumps(
                {
                    "instance_id": st.instance_id,
                    "name": st.name,
                    "status": st.runtime_status.value,
                    "input": st.input,
                    "output": st.output,
                    "custom_status": st.custom_status,
                    "failure": None if st.failure_details is None else st.failure_details.message,
                    "created_at": st.created_at.isoformat(),
                    "last_updated_at": st.last_updated_at.isoformat(),
                }
            )
        )


def register(cli: typer.Typer) -> None:
    """Add these commands to the top-level CLI."""
    for fn in (run, processor, worker, start, status):
        cli.command()(fn)
