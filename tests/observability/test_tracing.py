"""OpenTelemetry spans: one trace per execution, activities joining it across processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import durafka
from durafka.observability.tracing import root_span_id_of, trace_id_of
from durafka.status import RuntimeStatus
from durafka.topology import TopicSpec
from tests.observability import apps
from tests.observability.hosts import start_roles
from tests.observability.scrape import wait_for
from tests.observability.traced import read_spans, span_record
from tests.support.apps import make_app
from tests.support.processes import RoleLauncher

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans this process makes (the global provider is set once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def check_trace(records: list[dict[str, Any]], execution_id: str, activity: str) -> None:
    """The spans of one execution form one tree under its derived root."""
    trace_id, root_id = trace_id_of(execution_id), root_span_id_of(execution_id)
    mine = [r for r in records if r["trace_id"] == trace_id]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        by_name.setdefault(r["name"].split(" ")[0], []).append(r)
    (root,) = by_name["orchestration"]
    assert root["span_id"] == root_id and root["parent_id"] is None
    assert root["attributes"]["durafka.status"] == "completed"
    steps = by_name["step"]
    assert len(steps) >= 2 and all(s["parent_id"] == root_id for s in steps)
    (run,) = by_name["activity"]
    assert run["attributes"]["durafka.activity"] == activity
    # The activity's parent: the step that scheduled it (its context came in the headers),
    # or the root for an activity run next to the processor.
    assert run["parent_id"] in {s["span_id"] for s in steps} | {root_id}


def test_no_spans_unless_configured(
    app_factory: Callable[..., durafka.App], spans: InMemorySpanExporter
) -> None:
    app = app_factory()
    with app.running(), app.sync_client() as client:
        iid = client.start_new(apps.greeting, "quiet")
        client.wait_for_status(iid, timeout=60)
    assert spans.get_finished_spans() == ()


def test_one_trace_per_execution(
    app_factory: Callable[..., durafka.App], spans: InMemorySpanExporter
) -> None:
    app = app_factory(tracing=True)
    with app.running(), app.sync_client() as client:
        iid = client.start_new(apps.greeting, "traced")
        status = client.wait_for_status(iid, timeout=60)
    assert status.runtime_status is RuntimeStatus.COMPLETED
    assert status.execution_id is not None
    records = [span_record(s) for s in spans.get_finished_spans()]
    check_trace(records, status.execution_id, "greet")


@pytest.mark.slow
def test_an_activity_span_joins_the_trace_across_processes(
    kafka_bootstrap: str,
    hub: str,
    kafka_hub_topics: list[TopicSpec],
    tmp_path: Path,
    roles: RoleLauncher,
) -> None:
    prefix = tmp_path / "spans" / "roles"
    prefix.parent.mkdir()
    processor, worker = start_roles(
        roles,
        "tests.observability.traced:app",
        kafka_bootstrap,
        hub,
        tmp_path,
        DURAFKA_TRACING="true",
        DURAFKA_TEST_SPANS=str(prefix),
    )
    processor.wait_for_log(r"partition \d+ ready")
    app = make_app(kafka_bootstrap, hub, tmp_path / "client", apps.app.registry)
    with app.sync_client() as client:
        iid = client.start_new(apps.greeting, "far away")
        status = client.wait_for_status(iid, timeout=60)
    app.close()
    assert status.runtime_status is RuntimeStatus.COMPLETED
    assert status.execution_id is not None
    execution_id = status.execution_id
    wait_for(
        "the root span",
        lambda: any(r["name"] == "orchestration greeting" for r in read_spans(prefix)),
    )
    records = read_spans(prefix)
    check_trace(records, execution_id, "greet")
    (run,) = [r for r in records if r["name"] == "activity greet"]
    steps = [r for r in records if r["name"] == "step greeting"]
    assert run["pid"] == worker.pid and {s["pid"] for s in steps} == {processor.pid}
    # Carried in the task record's headers: the step that scheduled it is the parent.
    assert run["parent_id"] in {s["span_id"] for s in steps}
