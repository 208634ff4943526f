"""/healthz turns unhealthy while a role's loop is stuck, and healthy again when it moves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.client import Client
from durafka.hosting import Runner
from durafka.processor import Processor
from durafka.status import RuntimeStatus
from durafka.transport.memory import MemoryTransport
from tests.observability import apps
from tests.observability.hosts import ProducerWrappingTransport, memory_app
from tests.observability.scrape import probe, scrape, wait_for


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """``apps.release``, cleared for the test and set afterwards (nothing stays blocked)."""
    apps.release.clear()
    yield apps.release
    apps.release.set()


def stuck(port: int, role: str) -> bool:
    code, body = probe(port, "/healthz")
    return code == 503 and "stuck" in body["roles"][role]


def test_a_processor_stuck_in_orchestrator_code_is_unhealthy(
    app_factory: Callable[..., durafka.App], released: threading.Event
) -> None:
    app = app_factory(metrics_port=0, metrics_host="127.0.0.1", health_timeout_ms=1000)
    with app.running() as runner, app.sync_client() as client:
        port = runner.metrics_port
        assert port is not None
        wait_for("/readyz", lambda: probe(port, "/readyz")[0] == 200)
        assert probe(port, "/healthz")[0] == 200
        iid = client.start_new(apps.blocks)
        wait_for("/healthz to fail", lambda: stuck(port, "processor"))
        _, body = probe(port, "/healthz")
        assert body["roles"]["worker"]["ok"] is True  # only the stuck role fails
        assert probe(port, "/readyz")[0] == 503
        assert scrape(port).value("durafka_last_progress_seconds", role="processor") > 1.0
        released.set()
        wait_for("/healthz to pass again", lambda: probe(port, "/healthz")[0] == 200)
        assert client.wait_for_status(iid, timeout=60).runtime_status is RuntimeStatus.COMPLETED


class HangingProducer:
    """A transactional producer whose commit waits for ``gate`` while ``hang`` is set."""

    def __init__(self, inner: Any, hang: threading.Event, gate: threading.Event) -> None:
        self._inner = inner
        self._hang = hang
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        if self._hang.is_set():
            self._gate.wait(60)  # a broker that does not answer
        self._inner.commit_transaction(timeout)


def test_a_processor_stuck_in_a_kafka_call_is_unhealthy(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    hang, gate = threading.Event(), threading.Event()
    hanging = ProducerWrappingTransport(transport, lambda p: HangingProducer(p, hang, gate))
    processor = Processor(app.settings, app.registry, hanging, app.store_factory)  # type: ignore[arg-type]
    runner = Runner(metrics_port=0, metrics_host="127.0.0.1", health_timeout=1.0)
    runner.add("processor", processor.run, processor.metrics)
    runner.start()
    client = Client(app.settings, app.registry, transport)
    try:
        port = runner.metrics_port
        assert port is not None
        wait_for("/readyz", lambda: probe(port, "/readyz")[0] == 200)
        hang.set()
        client.start_new(apps.greeting, "x")  # its batch's commit hangs
        wait_for("/healthz to fail", lambda: stuck(port, "processor"))
        hang.clear()
        gate.set()
        wait_for("/healthz to pass again", lambda: probe(port, "/healthz")[0] == 200)
    finally:
        gate.set()
        client.close()
        runner.stop()
        app.close()
