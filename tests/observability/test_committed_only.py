"""What a batch did counts once, when its transaction commits (not when it is aborted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from durafka.client import Client
from durafka.errors import TransactionError
from durafka.processor import Processor
from durafka.transport.memory import MemoryTransport
from tests.observability import apps
from tests.observability.hosts import ProducerWrappingTransport, memory_app


class FailingOnceProducer:
    """A transactional producer whose first commit fails (abortable), as a broker hiccup."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        if not self.failed:
            self.failed = True
            raise TransactionError("injected: the commit failed")
        self._inner.commit_transaction(timeout)


def test_an_aborted_batch_counts_once(tmp_path: Path) -> None:
    app = memory_app(tmp_path, partitions=1)
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    producers: list[FailingOnceProducer] = []

    def wrap(producer: Any) -> FailingOnceProducer:
        producers.append(FailingOnceProducer(producer))
        return producers[-1]

    faulty = ProducerWrappingTransport(transport, wrap)
    processor = Processor(app.settings, app.registry, faulty, app.store_factory)  # type: ignore[arg-type]
    client = Client(app.settings, app.registry, transport)
    try:
        for _ in range(100):
            if processor.is_ready:
                break
            processor.run_once(poll_timeout=0.01)
        client.start_new(apps.greeting, "once")
        metrics = processor.metrics
        for _ in range(200):
            if metrics.transactions.value(("processor", "committed")):
                break
            processor.run_once(poll_timeout=0.01)
    finally:
        client.close()
        processor.close()
        app.close()
    assert producers and producers[0].failed
    assert metrics.transactions.value(("processor", "aborted")) == 1
    assert metrics.transactions.value(("processor", "committed")) == 1
    # The start was applied twice (aborted, then committed) and counts once.
    assert metrics.started.value(("greeting",)) == 1
    assert metrics.step_seconds.count(("greeting",)) == 1
