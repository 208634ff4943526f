"""``durafka serve APP``: the management HTTP API and the dashboard, on uvicorn.

Without ``DURAFKA_API_TOKEN`` it refuses to start, unless it listens on
127.0.0.1 only and ``--insecure-local`` says that every local user may act.
"""

from __future__ import annotations

from typing import Annotated

import typer

from durafka.cli.logs import LogFormat, LogLevel, configure_logging
from durafka.cli.manage import BootstrapOpt, HubOpt, fail, resolve_settings
from durafka.cli.options import AppArg, LogFormatOption, LogLevelOption
from durafka.errors import DurafkaError

__all__ = ["register", "serve"]

#: Room for the JSON around a payload of ``max_payload_bytes`` in a request body.
_REQUEST_OVERHEAD = 64 * 1024


def serve(
    app: AppArg,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8080,
    insecure_local: Annotated[
        bool,
        typer.Option(
            "--insecure-local",
            help="Serve without a token (only on 127.0.0.1): every local user may act.",
        ),
    ] = False,
    max_request_bytes: Annotated[
        int | None,
        typer.Option(min=1024, help="Largest request body (default: max_payload_bytes + 64 KiB)."),
    ] = None,
    hub: HubOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Serve the HTTP API and the web dashboard of APP's task hub."""
    # Imported here: the web stack loads only for this command.
    import uvicorn

    from durafka.api import ApiTokens, check_exposure, create_api
    from durafka.app import App
    from durafka.management import Management

    configure_logging(log_level, log_format)
    try:
        tokens = ApiTokens.from_env(insecure_local=insecure_local)
        check_exposure(tokens, host)
        settings, registry = resolve_settings(app, hub, bootstrap)
        # As `durafka run` does: a newcomer may start the dashboard first.
        hub_app = App(settings=settings)
        try:
            hub_app.ensure_topics()
        finally:
            hub_app.close()
        management = Management(settings, registry)
    except (DurafkaError, ValueError) as exc:
        fail(exc)
    limit = max_request_bytes or settings.max_payload_bytes + _REQUEST_OVERHEAD
    try:
        api = create_api(management, tokens, max_request_bytes=limit)
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        typer.echo(
            f"durafka: task hub {settings.task_hub!r} on {settings.bootstrap_servers}; "
            f"dashboard at http://{shown}:{port}/ , API schema at /openapi.json"
            + ("" if tokens.required else " (no token: --insecure-local)"),
            err=True,
        )
        uvicorn.run(api, host=host, port=port, log_level="info", timeout_graceful_shutdown=2)
    finally:
        management.close()


def register(cli: typer.Typer) -> None:
    """Add ``serve`` to the top-level CLI."""
    cli.command()(serve)
