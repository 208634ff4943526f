"""Hosting: run a processor and/or an activity worker on background threads (:class:`Runner`).

The embedded runner (both, in the app's process) is what ``app.run()`` starts;
``durafka processor`` and ``durafka worker`` run one role each, as deployed in
production (one process per core is the way to use several cores).

With a ``metrics_port``, the runner also serves its roles' metrics and health
(:mod:`durafka.observability.server`): liveness is each role's thread running
and its loop making progress within ``health_timeout``, readiness each role's
own (see :meth:`Runner.health`, :meth:`Runner.readiness`).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durafka.errors import DurafkaError

if TYPE_CHECKING:
    from durafka.observability.metrics import RoleMetrics
    from durafka.observability.server import ObservabilityServer

log = logging.getLogger("durafka.runner")


@dataclass
class _Role:
    name: str
    target: Callable[[threading.Event], None]
    thread: threading.Thread | None = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    metrics: RoleMetrics | None = None


def tune_garbage_collector(young_threshold: int) -> None:
    """Collect the young generation every ``young_threshold`` allocations at most.

    The processor loop allocates many short-lived objects per record (events,
    records, coroutine frames); with Python's default threshold of 700 the
    collector ran thousands of times per second and took ~30% of a busy
    processor's time (memory:// W1: 2,880 -> 4,460 orch/s with 50,000). Only
    raises the threshold, so a process that already chose a larger one keeps
    it; 0 changes nothing. The older generations keep their thresholds.
    """
    if young_threshold <= 0:
        return
    young, middle, old = gc.get_threshold()
    if young != 0 and young < young_threshold:  # 0: the process disabled collection
        gc.set_threshold(young_threshold, middle, old)


class Runner:
    """Runs roles (callables taking a stop event) on daemon threads and stops them together.

    Args:
        gc_young_threshold: see :func:`tune_garbage_collector`.
        metrics_port: serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port
            (0: any free one, see :attr:`metrics_port`); None: do not serve.
        metrics_host: the address to serve them on.
        health_timeout: seconds without progress after which a role is unhealthy.

    Example:
        >>> runner = Runner(metrics_port=9464)
        >>> runner.add("processor", processor.run, processor.metrics)
        >>> runner.start(); ...; runner.stop()
    """

    def __init__(
        self,
        *,
        gc_young_threshold: int = 0,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        health_timeout: float = 120.0,
    ) -> None:
        self._roles: list[_Role] = []
        self._stop = threading.Event()
        self.gc_young_threshold = gc_young_threshold
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self.health_timeout = health_timeout
        self._server: ObservabilityServer | None = None

    def add(
        self,
        name: str,
        target: Callable[[threading.Event], None],
        metrics: RoleMetrics | None = None,
    ) -> None:
        """Register a role; ``target(stop)`` must return soon after ``stop`` is set.

        ``metrics``: the role's metrics, liveness and readiness (served with the
        runner's ``metrics_port``).
        """
        self._roles.append(_Role(name, target, metrics=metrics))

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on (None: not served, or not started)."""
        return None if self._server is None else self._server.port

    def start(self) -> None:
        """Start every role on its own thread (and the metrics endpoint, if configured).

        Raises:
            ConfigurationError: the metrics port cannot be bound.
        """
        tune_garbage_collector(self.gc_young_threshold)
        self._stop.clear()
        if self._metrics_port is not None and self._server is None:
            self._serve_metrics(self._metrics_port)
        for role in self._roles:
            role.thread = threading.Thread(
                target=self._run_role, args=(role,), name=f"durafka-{role.name}", daemon=True
            )
            role.thread.start()

    def _run_role(self, role: _Role) -> None:
        try:
            role.target(self._stop)
        except BaseException as exc:
            role.error = exc
            log.exception("durafka %s stopped with an error", role.name)
            self._stop.set()

    @property
    def failed(self) -> BaseException | None:
        """The first error a role stopped with, if any."""
        return next((r.error for r in self._roles if r.error is not None), None)

    def request_stop(self) -> None:
        """Signal every role to stop, without waiting (safe in a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Signal every role to stop and wait for them; re-raise a role's error."""
        self._stop.set()
        for role in self._roles:
            if role.thread is not None:
                role.thread.join(timeout)
                if role.thread.is_alive():
                    log.warning("durafka %s did not stop within %.0fs", role.name, timeout)
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        for role in self._roles:
            if role.metrics is not None:
                role.metrics.close()
        err = self.failed
        if err is not None:
            raise DurafkaError(f"a durafka role failed: {err}") from err

    def wait(self) -> None:
        """Block until a role fails or ``stop()`` is called (for CLI commands)."""
        self._stop.wait()

    # -- health ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: every role's thread runs and its loop progressed within ``health_timeout``.

        Returns:
            Whether all roles are alive, and per role what was found.
        """
        roles: dict[str, Any] = {}
        for role in self._roles:
            running = role.thread is not None and role.thread.is_alive()
            found: dict[str, Any] = {"running": running}
            ok = running
            if role.error is not None:
                found["error"] = str(role.error)
            if role.metrics is not None:
                age = role.metrics.progress.age()
                found["last_progress_seconds"] = round(age, 3)
                if age > self.health_timeout:
                    ok = False
                    found["stuck"] = (
                        f"no progress for {age:.0f} s (health_timeout_ms is "
                        f"{self.health_timeout * 1000:.0f})"
                    )
            found["ok"] = ok
            roles[role.name] = found
        return all(r["ok"] for r in roles.values()), roles

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: every role is alive and ready (processor: partitions assigned and
        restored; worker: subscribed and polling).

        Returns:
            Whether all roles are ready, and per role what was found.
        """
        alive, health = self.health()
        roles: dict[str, Any] = {}
        for role in self._roles:
            ready = health[role.name]["ok"] and (role.metrics is None or role.metrics.is_ready())
            found: dict[str, Any] = {"ok": ready}
            if role.metrics is not None:
                found["partitions"] = role.metrics.owned_partitions()
            roles[role.name] = found
        return alive and all(r["ok"] for r in roles.values()), roles

    def _serve_metrics(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, ProcessCollector

        from durafka.errors import ConfigurationError
        from durafka.observability.metrics import MetricsCollector
        from durafka.observability.server import ObservabilityServer

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(
            MetricsCollector(lambda: [r.metrics for r in self._roles if r.metrics is not None])
        )
        server = ObservabilityServer(
            self._metrics_host, port, registry=registry, health=self.health, ready=self.readiness
        )
        try:
            server.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self._metrics_host}:{port}: {exc} (choose another "
                "--metrics-port / DURAFKA_METRICS_PORT)"
            ) from exc
        self._server = server
