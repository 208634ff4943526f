"""What every ``durafka`` command shares: where the cluster is, logging, output, errors.

A command declares the options it takes with the ``Annotated`` types below and
starts with :func:`setup` (or :func:`setup_logging` if it talks to no cluster)::

    @app.command()
    def status(
        app_spec: AppArg,
        instance_id: str,
        bootstrap: BootstrapOption = None,
        hub: HubOption = None,
        log_level: LogLevelOption = LogLevel.INFO,
        log_format: LogFormatOption = LogFormat.TEXT,
        as_json: JsonOption = False,
    ) -> None:
        with failures():
            app = load_app(app_spec)
            setup(bootstrap, hub, log_level, log_format, app=app)  # updates app.settings
            ...

Settings are read as an app reads them (``DURAFKA_*``, see
docs/configuration.md); ``--bootstrap`` and ``--hub`` win over them. Every
command that needs a cluster finds it by one rule, :func:`with_cluster`:
``--bootstrap``, else ``DURAFKA_BOOTSTRAP_SERVERS`` or the app's settings, else
the dev broker running from this directory (``durafka dev-broker start``),
else it fails, saying how to point it at Kafka. A command never falls back to
the in-process ``memory://`` broker: only an explicit one is taken.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from durafka.app import App
from durafka.cli.logs import LogFormat, LogLevel, configure_logging, uses_json
from durafka.errors import ConfigurationError, DurafkaError
from durafka.settings import BOOTSTRAP_ENV, MEMORY_BOOTSTRAP, Settings

__all__ = [
    "DEV_BROKER_DIR",
    "AppArg",
    "BootstrapOption",
    "CliError",
    "HubOption",
    "JsonOption",
    "LogFormatOption",
    "LogLevelOption",
    "emit_json",
    "fail",
    "failures",
    "load_app",
    "settings",
    "setup",
    "setup_logging",
    "with_cluster",
]

log = logging.getLogger("durafka.cli")

#: Exit code of a command that failed while running (cluster unreachable, ...).
EXIT_FAILED = 1
#: Exit code of a command that was given wrong input or settings: nothing was done.
EXIT_USAGE = 2

#: Where ``durafka dev-broker start`` keeps its broker unless told otherwise; relative,
#: so each project directory has its own and a command finds the one it runs from.
DEV_BROKER_DIR = Path(".durafka/dev-broker")

AppArg = Annotated[
    str, typer.Argument(help="The app as module:attribute, e.g. examples.hello:app.")
]
BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        help=(
            f"Kafka bootstrap servers (host:port,...); default: {BOOTSTRAP_ENV}, else the "
            f"dev broker running from this directory. {MEMORY_BOOTSTRAP} only where a "
            "command says so."
        ),
        show_default=False,
    ),
]
HubOption = Annotated[
    str | None,
    typer.Option(
        "--hub",
        help="Task hub (topic prefix); default: the app's, else DURAFKA_TASK_HUB, else durafka.",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        help="Log level; debug also shows the Kafka client libraries' own logs.",
        case_sensitive=False,
    ),
]
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format", help="Log lines as text, or one JSON object each.", case_sensitive=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


class CliError(DurafkaError):
    """A command cannot run as asked: the message says why and what to do.

    Attributes:
        exit_code: :data:`EXIT_USAGE` (nothing was done) unless told otherwise.
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def setup_logging(log_level: LogLevel, log_format: LogFormat) -> None:
    """Configure logging as ``--log-level`` and ``--log-format`` say."""
    configure_logging(log_level, log_format)


def setup(
    bootstrap: str | None,
    hub: str | None,
    log_level: LogLevel,
    log_format: LogFormat,
    *,
    app: App | None = None,
    in_process: bool = False,
) -> Settings:
    """Configure logging, then resolve the settings the command runs with.

    Args:
        bootstrap: ``--bootstrap``; wins over ``DURAFKA_BOOTSTRAP_SERVERS``.
        hub: ``--hub``; wins over the app's task hub and ``DURAFKA_TASK_HUB``.
        log_level: ``--log-level``.
        log_format: ``--log-format``.
        app: the command's app, if it has one; its settings are updated in place.
        in_process: the command runs roles in this process, so an explicit
            ``memory://`` is allowed (with a warning that only this process sees it).

    Returns:
        The settings (``app.settings`` when an app is given).

    Raises:
        CliError: no cluster is found (:func:`with_cluster`), or ``memory://`` was
            chosen for a command that would leave its work in a broker that ends
            with the process.
    """
    setup_logging(log_level, log_format)
    resolved = with_cluster(
        settings(bootstrap, hub, base=app.settings if app is not None else None),
        in_process=in_process,
    )
    if app is not None:
        app.settings = resolved
    require_cluster(resolved, in_process=in_process)
    return resolved


def settings(bootstrap: str | None, hub: str | None, *, base: Settings | None = None) -> Settings:
    """``base`` (default: from ``DURAFKA_*``) with ``--bootstrap`` and ``--hub`` applied.

    Raises:
        CliError: a value is invalid (e.g. a hub name that is no legal topic prefix).
    """
    updates: dict[str, Any] = {}
    if bootstrap is not None:
        updates["bootstrap_servers"] = bootstrap
    if hub is not None:
        updates["task_hub"] = hub
    try:
        if base is None:
            return Settings(**updates)
        if not updates:
            return base
        # Validated again (model_copy would not check the new values).
        return Settings(**{**base.model_dump(exclude_unset=False), **updates})
    except ValidationError as exc:
        raise CliError(_validation_message(exc)) from None


def with_cluster(resolved: Settings, *, in_process: bool = False) -> Settings:
    """``resolved`` with the Kafka cluster the command works on: the one rule of every command.

    ``resolved`` already holds ``--bootstrap``, else ``DURAFKA_BOOTSTRAP_SERVERS`` or the
    app's own setting; when none names servers, the dev broker running from this
    directory's :data:`DEV_BROKER_DIR` is taken, and stderr says so (once: a command
    resolves its settings once). A production pod runs no dev broker in its working
    directory, so there the command still stops.

    Args:
        resolved: the command's settings (see :func:`settings`).
        in_process: the command runs roles in this process; the error then also names
            ``--bootstrap memory://``.

    Returns:
        ``resolved`` itself when it names servers (``memory://`` included), else a copy
        naming the dev broker's.

    Raises:
        CliError: no servers are named and no dev broker runs from this directory.
    """
    if resolved.bootstrap_servers is not None:
        return resolved
    found = _running_dev_broker()
    if found is None:
        raise CliError(
            f"no Kafka cluster given: set {BOOTSTRAP_ENV}=host:port or pass --bootstrap "
            "host:port, or run `durafka dev-broker start` in this directory (commands run "
            "from it find that broker)"
            + (
                f"; --bootstrap {MEMORY_BOOTSTRAP} runs on an in-process broker that ends "
                "with this process"
                if in_process
                else ""
            )
        )
    log.info(
        "using the dev broker of this directory at %s (%s): no --bootstrap or %s names a cluster",
        found,
        DEV_BROKER_DIR,
        BOOTSTRAP_ENV,
    )
    return settings(found, None, base=resolved)


def _running_dev_broker() -> str | None:
    """The address of the dev broker running from this directory, if one runs."""
    # Development tooling: imported only by a command that found no cluster named.
    from durafka.dev.broker import LocalBroker

    status = LocalBroker(DEV_BROKER_DIR).status()
    return status.bootstrap if status.running else None


def require_cluster(settings: Settings, *, in_process: bool) -> None:
    """Refuse ``memory://`` where nothing could see what the command did (see :func:`setup`).

    Raises:
        CliError: ``memory://`` for a command that does not run roles in this process.
    """
    if not settings.is_memory:
        return
    if not in_process:
        raise CliError(
            f"{settings.bootstrap_servers} is a broker inside one process: this command would "
            "use one of its own that ends when it exits, which no processor or other command "
            f"can see. Point it at Kafka with {BOOTSTRAP_ENV} or --bootstrap host:port."
        )
    log.warning(
        "running on %s: an in-process broker, not durable and not visible to any other "
        "process (no client can reach these roles)",
        settings.bootstrap_servers,
    )


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and return the :class:`App` it names.

    Raises:
        CliError: ``spec`` is not ``module:attribute``, cannot be imported, or
            does not name an App.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliError(f"{spec!r} is not module:attribute (e.g. examples.hello:app)")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CliError(f"cannot import {module_name!r} for {spec}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise CliError(f"{spec} is not a durafka.App")
    return app


def emit_json(value: Any) -> None:
    """Print ``value`` as one line of JSON on stdout (datetimes and paths as strings)."""
    typer.echo(json.dumps(value, default=str, ensure_ascii=False))


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    """End the command: ``error: message`` on stderr (a JSON log line with --log-format json)."""
    if uses_json():
        log.error("%s", message)
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """Turn durafka's errors inside the block into :func:`fail` (one line, an exit code).

    A :class:`CliError` or :class:`~durafka.errors.ConfigurationError` exits with
    :data:`EXIT_USAGE`, any other :class:`~durafka.errors.DurafkaError` with
    :data:`EXIT_FAILED`. Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except CliError as exc:
        fail(str(exc), exc.exit_code)
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    except DurafkaError as exc:
        fail(str(exc), EXIT_FAILED)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
    )
