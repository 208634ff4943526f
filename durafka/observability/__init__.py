"""Observability of the roles: Prometheus metrics, health and readiness, tracing.

* :mod:`~durafka.observability.metrics`: the metrics of a processor and a worker
  (:class:`ProcessorMetrics`, :class:`WorkerMetrics`), written by the role's own
  thread without locks and read by scrapes;
* :mod:`~durafka.observability.health`: :class:`Progress`, the "last progress"
  time of a role's loop (``/healthz``);
* :mod:`~durafka.observability.server`: the HTTP endpoint (``/metrics``,
  ``/healthz``, ``/readyz``) a :class:`~durafka.hosting.Runner` serves on
  ``metrics_port``;
* :mod:`~durafka.observability.tracing`: optional OpenTelemetry spans of
  orchestration steps and activities, their context carried in Kafka headers.
"""

from durafka.observability.health import Progress
from durafka.observability.metrics import ProcessorMetrics, RoleMetrics, WorkerMetrics

__all__ = ["ProcessorMetrics", "Progress", "RoleMetrics", "WorkerMetrics"]
