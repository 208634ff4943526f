"""The observability tests' app with an OpenTelemetry SDK provider: spans go to a file.

Role subprocesses load ``tests.observability.traced:app``; with
``DURAFKA_TEST_SPANS=<path>`` each process appends its finished spans to
``<path>.<pid>``, one JSON object per line (:func:`span_record`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.observability.apps import app

__all__ = ["FileExporter", "app", "read_spans", "span_record"]


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the tests check of a span."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": context.trace_id,
        "span_id": context.span_id,
        "parent_id": span.parent.span_id if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "pid": os.getpid(),
    }


class FileExporter(SpanExporter):
    """Appends each span as a line of JSON."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._path.open("a") as out:
            for span in spans:
                out.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS


def read_spans(prefix: Path) -> list[dict[str, Any]]:
    """Every span the processes wrote to ``<prefix>.<pid>`` files."""
    spans: list[dict[str, Any]] = []
    for path in sorted(prefix.parent.glob(prefix.name + ".*")):
        spans.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return spans


_path = os.environ.get("DURAFKA_TEST_SPANS")
if _path:
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(FileExporter(Path(f"{_path}.{os.getpid()}"))))
    trace.set_tracer_provider(_provider)
