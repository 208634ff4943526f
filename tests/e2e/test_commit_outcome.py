"""A commit whose outcome is unknown, on a real broker frozen across the commit.

The broker is stopped (SIGSTOP) right before the processor's ``commit_transaction``
and thawed a few seconds later. Resumed within ``commit_timeout_ms``, the commit
completes; given up after it, the processor recreates its producer (which
completes or aborts the pending transaction) and restores the partitions from the
changelog. Either way every instance ends exactly once and no activity task is
scheduled twice (issue 10, hole 4). The broker is this test's own: freezing the
session's broker would stall every other test.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.codec.records import decode_activity_task, decode_status
from durafka.dev.broker import LocalBroker
from durafka.errors import CommitOutcomeUnknownError
from durafka.hosting import Runner
from durafka.topology import HubTopics, load_hub_spec
from durafka.transport.admin import admin_client, apply_topics
from tests.e2e import apps
from tests.e2e.conftest import make_app
from tests.features.helpers import read_topic
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FREEZE_S = 4.0


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path_factory.mktemp("frozen-broker"))
    broker.start()
    yield broker
    os.kill(broker.status().pid or 0, signal.SIGCONT)  # never leave it frozen
    broker.stop()


def freeze_during_first_commit(
    processor: Any, broker: LocalBroker, frozen: list[float], unknown: list[str]
) -> None:
    """Stop the broker just before the processor's first commit after the patch.

    ``unknown`` collects each commit call that ended with its outcome unknown.
    """
    producer = processor._producer
    real_commit = producer.commit_transaction
    pid = broker.status().pid
    assert pid is not None

    def commit(timeout: float = 30.0) -> None:
        if not frozen:
            frozen.append(FREEZE_S)
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(FREEZE_S, os.kill, (pid, signal.SIGCONT)).start()
        try:
            real_commit(timeout)
        except CommitOutcomeUnknownError as exc:
            unknown.append(str(exc))
            raise

    producer.commit_transaction = commit


@pytest.mark.parametrize(
    "commit_timeout_ms",
    [8_000, 1_500],
    ids=["resumed-until-known", "given-up-and-restored"],
)
def test_a_commit_across_a_broker_freeze_takes_effect_once(
    own_broker: LocalBroker,
    tmp_path: Path,
    commit_timeout_ms: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="durafka.processor")
    bootstrap = own_broker.bootstrap
    assert bootstrap is not None
    hub = f"t{uuid.uuid4().hex[:10]}"
    apply_topics(admin_client(bootstrap), load_hub_spec(hub, partitions=2))
    app: durafka.App = make_app(
        bootstrap,
        hub,
        tmp_path / "state",
        partitions=2,
        commit_timeout_ms=commit_timeout_ms,
        local_activities=False,
    )
    processor = app.processor()
    frozen: list[float] = []
    unknown: list[str] = []
    runner = Runner()
    runner.add("processor", processor.run)
    runner.add("worker", app.worker().run)
    with app.sync_client() as client:
        runner.start()
        try:
            first = client.start_new(apps.sequence, 0, instance_id="before")
            assert client.wait_for_completion(first, timeout=60) == 5
            freeze_during_first_commit(processor, own_broker, frozen, unknown)
            patched = processor._producer
            expected = {
                client.start_new(apps.sequence, x, instance_id=f"s-{x}"): x + 5 for x in range(20)
            }
            wait_until(lambda: frozen, timeout=30, what="the freeze")
            for iid, output in expected.items():
                assert client.wait_for_completion(iid, timeout=120) == output
        finally:
            runner.stop()
    topics = HubTopics(hub)
    terminal = Counter(
        status.instance_id
        for _, value in read_topic(app.transport, topics.status)
        if value is not None
        for status in [decode_status(value)]
        if status.runtime_status.is_terminal
    )
    assert all(terminal[iid] == 1 for iid in expected), terminal
    tasks = Counter(
        (task.instance_id, task.seq)
        for _, value in read_topic(app.transport, topics.activities)
        if value is not None
        for task in [decode_activity_task(value)]
    )
    assert all(n == 1 for n in tasks.values()), {k: n for k, n in tasks.items() if n > 1}
    # The path the case is about was taken.
    if commit_timeout_ms > FREEZE_S * 1000:
        # Resumed: a call ended unknown, the next one on the same producer finished it.
        assert unknown and processor._producer is patched
    else:
        # Given up: the producer was replaced and the partitions restored.
        assert unknown and processor._producer is not patched
        assert "has an unknown outcome, restoring the partitions" in caplog.text
    app.close()
