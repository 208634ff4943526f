"""Optional OpenTelemetry tracing: one trace per orchestration execution.

Off unless ``Settings.tracing`` is true (``DURAFKA_TRACING=true``); then spans go
to OpenTelemetry's global tracer provider, which the application configures
(exporter, sampling), e.g. in the module that defines the app, or with
``opentelemetry-instrument``. Needs ``opentelemetry-api`` (the ``tracing`` extra
brings ``opentelemetry-sdk``).

An execution outlives processes and batches, so its trace is derived, not
stored: the **trace id is the execution id** (a uuid, 128 bits; any other id is
hashed), and the execution's root span id is a hash of it. Every process can
therefore put its spans into the right trace without reading anything:

* ``orchestration <name>``: the root span, from the execution's creation to
  its end (emitted by the processor when it ends; with the OpenTelemetry SDK,
  with exactly the derived ids, so the tree has its root);
* ``step <name>``: each orchestrator step, a child of the root;
* ``activity <name>``: each activity execution (worker, or next to the
  processor), a child of the step that scheduled it. The step's context travels
  to the worker in the activity task's Kafka headers (W3C ``traceparent``);
  without it (a task produced by an older version) the root is the parent.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from durafka.errors import ConfigurationError
from durafka.version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, Tracer

    from durafka.codec.records import ActivityTask
    from durafka.runtime.history import HistoryEvent
    from durafka.settings import Settings
    from durafka.transport.base import RecordHeaders

__all__ = ["StepSpan", "Tracing", "execution_span_context"]

#: The instrumentation scope of durafka's spans.
SCOPE = "durafka"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def trace_id_of(execution_id: str) -> int:
    """The trace id of an execution: its uuid as a number (other ids: a hash)."""
    if len(execution_id) == 32:
        try:
            value = int(execution_id, 16)
        except ValueError:
            pass
        else:
            if value:
                return value
    return int.from_bytes(_digest(execution_id)[:16], "big") or 1


def root_span_id_of(execution_id: str) -> int:
    """The span id of an execution's root span (derived, never zero)."""
    return int.from_bytes(_digest("root:" + execution_id)[:8], "big") or 1


def execution_span_context(execution_id: str) -> SpanContext:
    """The (remote) context of an execution's root span: the parent of its steps."""
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(
        trace_id_of(execution_id),
        root_span_id_of(execution_id),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def _execution_id(token: str | None) -> str | None:
    """The execution id of an execution token ``<execution id>:<generation>``."""
    if not token:
        return None
    return token.rsplit(":", 1)[0] or None


class Tracing:
    """Makes durafka's spans (see the module docstring).

    Args:
        tracer: the tracer spans are made with.
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._root_tracer, self._root_ids = _fixed_id_tracer(tracer)

    @classmethod
    def for_settings(cls, settings: Settings) -> Tracing | None:
        """Tracing on the global tracer provider if ``settings.tracing``, else None.

        Raises:
            ConfigurationError: tracing is on and OpenTelemetry is not installed.
        """
        if not settings.tracing:
            return None
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise ConfigurationError(
                "DURAFKA_TRACING is on but OpenTelemetry is not installed: "
                "pip install 'durafka[tracing]'"
            ) from exc
        return cls(trace.get_tracer(SCOPE, __version__))

    # -- the processor ---------------------------------------------------------------------

    def step(
        self, orchestration: str, instance_id: str, execution_id: str | None, partition: int
    ) -> StepSpan | None:
        """Start the span of one orchestrator step (None: the execution has no id, no trace)."""
        from opentelemetry import propagate, trace

        if execution_id is None:  # an execution from before execution ids
            return None
        parent = trace.set_span_in_context(
            trace.NonRecordingSpan(execution_span_context(execution_id))
        )
        span = self._tracer.start_span(
            f"step {orchestration}",
            context=parent,
            attributes=_attributes(orchestration, instance_id, execution_id, partition),
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return StepSpan(span, [(k, v.encode()) for k, v in carrier.items()])

    def ended(
        self,
        orchestration: str,
        instance_id: str,
        execution_id: str | None,
        status: str,
        created_ms: int,
        ended_ms: int,
    ) -> None:
        """An execution ended: its root span, from its creation to now."""
        from opentelemetry.context import Context
        from opentelemetry.trace import Status, StatusCode

        if execution_id is None:
            return
        self._root_ids.next = (trace_id_of(execution_id), root_span_id_of(execution_id))
        try:
            span = self._root_tracer.start_span(
                f"orchestration {orchestration}",
                context=Context(),
                attributes={
                    **_attributes(orchestration, instance_id, execution_id, None),
                    "durafka.status": status,
                },
                start_time=created_ms * 1_000_000,
            )
        finally:
            self._root_ids.next = None
        if status != "completed":
            span.set_status(Status(StatusCode.ERROR, status))
        span.end(end_time=max(created_ms, ended_ms) * 1_000_000)

    # -- activities (worker and local) --------------------------------------------------------

    def activity(
        self,
        task: ActivityTask,
        headers: RecordHeaders,
        result: HistoryEvent,
        seconds: float,
    ) -> None:
        """An activity execution that just ended after ``seconds``: its span.

        ``headers``: the task record's headers (the scheduling step's context), or
        None (local activities, older tasks): the execution's root is the parent.
        """
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Status, StatusCode

        from durafka.runtime.history import EventKind

        execution_id = _execution_id(task.execution_id)
        if execution_id is None:
            return
        parent: Context | None = None
        carrier = _carrier(headers)
        if carrier:
            parent = propagate.extract(carrier)
            if not trace.get_current_span(parent).get_span_context().is_valid:
                parent = None
        if parent is None:
            parent = trace.set_span_in_context(
                trace.NonRecordingSpan(execution_span_context(execution_id))
            )
        end = time.time_ns()
        span: Span = self._tracer.start_span(
            f"activity {task.name}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "durafka.activity": task.name,
                "durafka.instance_id": task.instance_id,
                "durafka.execution_id": execution_id,
                "durafka.seq": task.seq,
            },
            start_time=end - int(seconds * 1e9),
        )
        if result.kind is EventKind.TASK_FAILED:
            message = result.failure.message if result.failure is not None else "failed"
            span.set_status(Status(StatusCode.ERROR, message))
        span.end(end_time=end)


class StepSpan:
    """The span of one orchestrator step, and the headers that carry it to its activities.

    Attributes:
        headers: Kafka headers (W3C ``traceparent``) for the activity tasks it schedules.
    """

    __slots__ = ("_span", "headers")

    def __init__(self, span: Span, headers: list[tuple[str, bytes]]) -> None:
        self._span = span
        self.headers = headers

    def end(self) -> None:
        """The step is done (its actions routed)."""
        self._span.end()


def _attributes(
    orchestration: str, instance_id: str, execution_id: str, partition: int | None
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "durafka.orchestration": orchestration,
        "durafka.instance_id": instance_id,
        "durafka.execution_id": execution_id,
    }
    if partition is not None:
        attributes["durafka.partition"] = partition
    return attributes


def _carrier(headers: RecordHeaders) -> dict[str, str]:
    if not headers:
        return {}
    pairs: Sequence[tuple[str, Any]] | Any = (
        headers.items() if hasattr(headers, "items") else headers
    )
    carrier: dict[str, str] = {}
    for key, value in pairs:
        if value is None:
            continue
        carrier[key] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return carrier


class _NextIds(threading.local):
    """Ids the next span of this thread takes (None: random ones)."""

    next: tuple[int, int] | None = None


def _fixed_id_tracer(tracer: Tracer) -> tuple[Tracer, _NextIds]:
    """A copy of ``tracer`` whose next span can be given its trace and span id.

    Only an OpenTelemetry SDK tracer has an ``id_generator``; any other tracer is
    used as it is (its root spans then get ids of their own: the steps and
    activities still share the execution's trace id).
    """
    import copy

    ids = _NextIds()
    found = getattr(tracer, "id_generator", None)
    if found is None:
        return tracer, ids
    fallback: Any = found
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class FixedIds(IdGenerator):
        def generate_span_id(self) -> int:
            fixed = ids.next
            return fixed[1] if fixed is not None else int(fallback.generate_span_id())

        def generate_trace_id(self) -> int:
            fixed = ids.next
            return fixed[0] if fixed is not None else int(fallback.generate_trace_id())

    root_tracer = copy.copy(tracer)
    root_tracer.id_generator = FixedIds()  # type: ignore[attr-defined]
    return root_tracer, ids
