"""``durafka run | processor | worker | start | status``: commands on an app.

Run its roles (hosted by :class:`~durafka.hosting.Runner`), start and inspect
its instances.

``APP`` is ``module:attribute`` naming a :class:`durafka.App`, e.g. ``examples.hello:app``.
Settings come from ``DURAFKA_*`` variables (docs/configuration.md); ``--bootstrap``
and ``--hub`` win over them. Every command needs a Kafka cluster
(``--bootstrap``, ``DURAFKA_BOOTSTRAP_SERVERS``, or the dev broker running from
this directory: :func:`~durafka.cli.options.with_cluster`); only the roles
accept an explicit ``memory://``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from durafka.cli.logs import LogFormat, LogLevel
from durafka.cli.options import (
    AppArg,
    BootstrapOption,
    CliError,
    HubOption,
    JsonOption,
    LogFormatOption,
    LogLevelOption,
    emit_json,
    fail,
    failures,
    load_app,
    setup,
)
from durafka.client._common import ClientCore
from durafka.compiled import build_description
from durafka.deploy import ordinal_of, parse_partition_list, pod_range
from durafka.errors import (
    ConfigurationError,
    DurafkaError,
    InvalidInstanceIdError,
    PayloadTooLargeError,
    SerializationError,
    UnknownFunctionError,
)
from durafka.hosting import Runner
from durafka.ids import check_orchestration_id
from durafka.status import OrchestrationStatus
from durafka.transport.calls import calls_in_flight
from durafka.version import __version__

log = logging.getLogger("durafka.cli")

PartitionsOption = Annotated[
    str | None, typer.Option(help="Static partitions, e.g. 0-3 (default: a consumer group).")
]


def parse_partitions(text: str | None) -> list[int] | None:
    """``"0-3,6"`` -> ``[0, 1, 2, 3, 6]``; None when not given."""
    if not text:
        return None
    try:
        return parse_partition_list(text)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--partitions") from None


def checked_id(instance_id: str, param: str) -> str:
    """``instance_id`` if it obeys the id rules (:mod:`durafka.ids`), else a usage error."""
    try:
        return check_orchestration_id(instance_id)
    except InvalidInstanceIdError as exc:
        raise typer.BadParameter(str(exc), param_hint=param) from None


@dataclass(frozen=True)
class PodRange:
    """``--pods N`` with ``--pod-index I`` (or the hostname's ordinal): range I of N."""

    pods: int
    index: int | None

    def partitions(self, partition_count: int) -> list[int]:
        """This pod's partitions of ``durafka deploy plan --pods N`` over ``partition_count``.

        Raises:
            ConfigurationError: the index is not below N, N exceeds the partitions, or the
                hostname is not a StatefulSet pod's.
        """
        index = self.index if self.index is not None else ordinal_of(socket.gethostname())
        return parse_partition_list(pod_range(partition_count, self.pods, index))


#: After SIGTERM (or Ctrl-C), a role process exits within this many seconds: Kubernetes
#: waits 30 s (terminationGracePeriodSeconds) before it kills a pod.
STOP_BOUND_S = 25.0
#: The exit status when a role did not stop within :data:`STOP_BOUND_S`.
EXIT_NOT_STOPPED = 1

MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        help="Serve Prometheus /metrics and the probes /healthz, /readyz on this port "
        "(default: DURAFKA_METRICS_PORT, else not served).",
        min=0,
        max=65535,
    ),
]


def _serve(
    spec: str,
    partitions: str | None,
    bootstrap: str | None,
    hub: str | None,
    log_level: LogLevel,
    log_format: LogFormat,
    *,
    processor: bool,
    worker: bool,
    pod: PodRange | None = None,
    metrics_port: int | None = None,
) -> None:
    """Host the roles until SIGTERM or Ctrl-C; exit within :data:`STOP_BOUND_S` after it.

    A role stuck in a Kafka call ends the process with status 75 at once (the
    watchdog, :mod:`durafka.watchdog`); a supervisor starts it again. ``kill
    -USR1`` prints every thread's stack to stderr.
    """
    ranges = parse_partitions(partitions)
    stopping: list[float] = []
    # Until there is a runner to stop, SIGTERM unwinds the start as Ctrl-C does: a pod
    # deleted while its app imports or its cluster is looked up exits 0 at once,
    # instead of dying by the signal or finishing a start nobody wants.
    signal.signal(signal.SIGTERM, _stop_while_starting)
    try:
        with failures():
            app = load_app(spec)
            settings = setup(bootstrap, hub, log_level, log_format, app=app, in_process=True)
            if pod is not None:
                ranges = pod.partitions(settings.partition_count())
            if metrics_port is not None:
                app.settings = settings = settings.model_copy(update={"metrics_port": metrics_port})
            runner = app.runner(
                processor=processor, worker=worker, partitions=ranges, exit_when_stuck=True
            )

            def on_term(*_: object) -> None:
                stopping.append(time.monotonic())
                runner.request_stop()

            signal.signal(signal.SIGTERM, on_term)
    except (_StoppedWhileStarting, KeyboardInterrupt):
        # A warning: it reaches stderr even when the app had not loaded and logging is not set up.
        log.warning("stopped while starting (SIGTERM or Ctrl-C): nothing was served")
        return
    with contextlib.suppress(ValueError, RuntimeError):  # no SIGUSR1 (or not main thread)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    with failures():
        runner.start()
    if stopping:  # a SIGTERM before start(), which clears the request
        runner.request_stop()
    served = (
        f"; metrics on :{runner.metrics_port}/metrics" if runner.metrics_port is not None else ""
    )
    log.info(
        "serving task hub %r on %s (processor=%s, worker=%s; durafka %s, %s)%s; Ctrl-C to stop",
        settings.task_hub,
        settings.bootstrap,
        processor,
        worker,
        __version__,
        build_description(),
        served,
    )
    with contextlib.suppress(KeyboardInterrupt):
        runner.wait()
    began = stopping[0] if stopping else time.monotonic()
    try:
        runner.stop(timeout=max(0.0, began + STOP_BOUND_S - time.monotonic()))
    except DurafkaError as exc:
        # The role logged its traceback; the exit code and one line are for the supervisor.
        _exit_now_if_stuck(runner)
        fail(str(exc))
    _exit_now_if_stuck(runner)


class _StoppedWhileStarting(BaseException):
    """SIGTERM arrived before the roles started (a BaseException, as KeyboardInterrupt is:
    no ``except Exception`` on the way may swallow it)."""


def _stop_while_starting(*_: object) -> None:
    raise _StoppedWhileStarting


def _exit_now_if_stuck(runner: Runner) -> None:
    """A role that did not stop may sit in a Kafka call that never returns: leave it."""
    alive = runner.alive
    if not alive:
        return
    overdue = [call for call in calls_in_flight() if call.elapsed > call.bound]
    log.error(
        "%s did not stop within %.0f s; exiting anyway (work not committed runs again)%s",
        " and ".join(alive),
        STOP_BOUND_S,
        "".join(f"; stuck in {call}" for call in overdue),
    )
    logging.shutdown()
    sys.stderr.flush()
    # Interpreter shutdown would wait on the Kafka clients the stuck thread still uses.
    os._exit(EXIT_NOT_STOPPED)


def run(
    app: AppArg,
    partitions: PartitionsOption = None,
    bootstrap: BootstrapOption = None,
    hub: HubOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run a processor and an activity worker for APP in this process.

    Example: durafka run examples.hello:app --metrics-port 9464
    """
    _serve(
        app,
        partitions,
        bootstrap,
        hub,
        log_level,
        log_format,
        processor=True,
        worker=True,
        metrics_port=metrics_port,
    )


def processor(
    app: AppArg,
    partitions: PartitionsOption = None,
    pods: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Static ranges for this many pods: take this pod's range of "
            "`durafka deploy plan --pods N` (with --pod-index or --ordinal-from-hostname).",
        ),
    ] = None,
    pod_index: Annotated[
        int | None, typer.Option(min=0, help="This pod's index (0-based) with --pods.")
    ] = None,
    ordinal_from_hostname: Annotated[
        bool,
        typer.Option(
            "--ordinal-from-hostname",
            help="With --pods: the index is the hostname's -<ordinal> (a StatefulSet pod).",
        ),
    ] = False,
    bootstrap: BootstrapOption = None,
    hub: HubOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run a processor for APP (consumer group, or a static partition range).

    Example (in a pod of a StatefulSet of 3):
    durafka processor app:app --pods 3 --ordinal-from-hostname
    """
    pod = _pod_range(pods, pod_index, ordinal_from_hostname, partitions)
    _serve(
        app,
        partitions,
        bootstrap,
        hub,
        log_level,
        log_format,
        processor=True,
        worker=False,
        pod=pod,
        metrics_port=metrics_port,
    )


def _pod_range(
    pods: int | None, index: int | None, from_hostname: bool, partitions: str | None
) -> PodRange | None:
    if pods is None:
        if index is not None or from_hostname:
            raise typer.BadParameter("--pod-index and --ordinal-from-hostname need --pods")
        return None
    if partitions is not None:
        raise typer.BadParameter("give either --partitions or --pods, not both")
    if (index is None) == (not from_hostname):
        raise typer.BadParameter("--pods needs exactly one of --pod-index, --ordinal-from-hostname")
    return PodRange(pods, index)


def worker(
    app: AppArg,
    bootstrap: BootstrapOption = None,
    hub: HubOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run an activity worker for APP."""
    _serve(
        app,
        None,
        bootstrap,
        hub,
        log_level,
        log_format,
        processor=False,
        worker=True,
        metrics_port=metrics_port,
    )


def start(
    app: AppArg,
    name: Annotated[str, typer.Argument(help="Orchestration name.")],
    input: Annotated[str, typer.Argument(help="Input as JSON.")] = "null",
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (default: random).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for completion and print the output.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 60.0,
    bootstrap: BootstrapOption = None,
    hub: HubOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOption = False,
) -> None:
    """Start an orchestration instance of APP; print its id (and its end with --wait)."""
    if instance_id is not None:
        checked_id(instance_id, "--id")
    try:
        value: Any = json.loads(input)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"input is not JSON: {exc}", param_hint="INPUT") from None
    with failures():
        the_app = load_app(app)
        try:
            # The checks start_new makes, before connecting: a typo or an input of the
            # wrong shape is a usage error, not an instance that fails in the processor.
            ClientCore(the_app.settings, the_app.registry).prepare_start(name, value, instance_id)
        except (UnknownFunctionError, SerializationError, PayloadTooLargeError) as exc:
            raise CliError(str(exc)) from None
        setup(bootstrap, hub, log_level, log_format, app=the_app)
        with the_app.sync_client() as client:
            iid = client.start_new(name, value, instance_id=instance_id)
            if not wait:
                if as_json:
                    emit_json({"instance_id": iid})
                else:
                    typer.echo(iid)
                return
            if not as_json:
                typer.echo(iid)
            status = client.wait_for_status(iid, timeout=timeout)
            if as_json:
                emit_json(_status_json(status))
            else:
                typer.echo(_status_text(status))


def status(
    app: AppArg,
    instance_id: Annotated[str, typer.Argument(help="Instance id.")],
    bootstrap: BootstrapOption = None,
    hub: HubOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    as_json: JsonOption = False,
) -> None:
    """Print the status of one instance of APP (exit code 1 if there is none)."""
    checked_id(instance_id, "INSTANCE_ID")
    with failures():
        the_app = load_app(app)
        setup(bootstrap, hub, log_level, log_format, app=the_app)
        with the_app.sync_client() as client:
            st = client.get_status(instance_id)
        if st is None:
            hub_name = the_app.settings.task_hub
            raise CliError(f"no instance {instance_id!r} in task hub {hub_name!r}", 1)
        if as_json:
            emit_json(_status_json(st))
        else:
            typer.echo(_status_text(st))


def _status_json(st: OrchestrationStatus) -> dict[str, Any]:
    return {
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


def _status_text(st: OrchestrationStatus) -> str:
    fields = _status_json(st)
    width = max(len(key) for key in fields)
    return "\n".join(
        f"{key.replace('_', ' '):<{width}}  {_shown(value)}"
        for key, value in fields.items()
        if value is not None or key in ("output",)
    )


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def register(cli: typer.Typer) -> None:
    """Add these commands to the top-level CLI."""
    for fn in (run, processor, worker, start, status):
        cli.command()(fn)
