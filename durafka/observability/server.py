"""The HTTP endpoint of a role process: ``/metrics``, ``/healthz``, ``/readyz``.

One small threaded HTTP server (the standard library's) per process, started
by a :class:`~durafka.hosting.Runner` when ``metrics_port`` is set:

* ``/metrics``: Prometheus text format (every role of the process, plus the
  ``process_*`` metrics of ``prometheus_client``);
* ``/healthz``: 200 while every role's loop made progress within
  ``health_timeout_ms`` (Kubernetes liveness), else 503;
* ``/readyz``: 200 once every role is ready (processor: partitions assigned and
  restored; worker: subscribed and polling), else 503 (Kubernetes readiness).

Both probes answer with a JSON object per role, e.g.
``{"status": "ok", "roles": {"processor": {"ok": true, ...}}}``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Check", "ObservabilityServer"]

log = logging.getLogger("durafka.observability")

Check = Callable[[], tuple[bool, dict[str, Any]]]
"""A probe: whether it passes, and what it found (per role)."""


class ObservabilityServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread.

    Args:
        host: the address to listen on (``0.0.0.0``: every interface, as probes need).
        port: the port (0: any free port; see :attr:`port`).
        registry: what ``/metrics`` exposes.
        health: the liveness check.
        ready: the readiness check.

    Example:
        >>> server = ObservabilityServer("127.0.0.1", 0, registry=r, health=h, ready=ok)
        >>> server.start(); print(server.port); server.stop()
    """

    def __init__(
        self, host: str, port: int, *, registry: CollectorRegistry, health: Check, ready: Check
    ) -> None:
        self._host = host
        self._requested_port = port
        self._registry = registry
        self._checks = {"/healthz": health, "/readyz": ready}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (after :meth:`start`)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve on a daemon thread.

        Raises:
            OSError: the port is taken or the address is not this machine's.
        """
        server = ThreadingHTTPServer((self._host, self._requested_port), self._handler())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="durafka-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", self._host, self.port)

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry, checks = self._registry, self._checks

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                    return
                check = checks.get(path)
                if check is None:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")
                    return
                ok, roles = check()
                body = {"status": "ok" if ok else "failing", "roles": roles}
                self._send(
                    200 if ok else 503,
                    "application/json",
                    json.dumps(body, sort_keys=True).encode() + b"\n",
                )

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return Handler
