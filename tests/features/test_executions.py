"""Executions: each start of an id and each continue_as_new generation is its own.

Sequence ids restart with every execution, so a completion must say which
execution it belongs to (issue 10, hole 2): a late result of an earlier one is
dropped, never taken as the answer to the new call with the same sequence id.
Starts are idempotent by default (hole 8): a start for an id whose execution
finished is ignored unless its id reuse policy allows a new execution.
"""

from __future__ import annotations

import uuid

import pytest

import durafka
from durafka.client import Client
from durafka.codec.records import decode_status, encode_message
from durafka.errors import OrchestrationFailed
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import RuntimeStatus
from durafka.topology import HubTopics
from tests.features import apps
from tests.features.helpers import read_topic, status_records
from tests.support.waiting import wait_until

ALLOW = durafka.IdReusePolicy.ALLOW_DUPLICATE


def test_a_late_result_of_an_earlier_generation_is_not_the_next_generation_s(
    client: Client,
) -> None:
    """The issue's reproduction: generation 0 times out on a call and continues as new;
    generation 1's call (sequence id 0 again) must get its own result."""
    iid = client.start_new(apps.generations_of_one_call, 0)
    assert client.wait_for_completion(iid, timeout=60) == "generation 1"


def test_a_restarted_id_ignores_its_previous_execution_s_late_result(
    client: Client, running_app: durafka.App
) -> None:
    """Terminated while its activity runs, started again under the same id: the old
    execution's result arrives first and must not complete the new one; the client
    waits for the new execution, not the old status."""
    iid = f"restart-{uuid.uuid4().hex[:6]}"
    client.start_new(apps.echo_once, apps.Echo("first", 0.8), instance_id=iid)
    wait_until(lambda: client.get_status(iid), timeout=30)
    client.terminate(iid, "restart it")
    first = client.wait_for_status(iid, timeout=30)
    assert first.runtime_status is RuntimeStatus.TERMINATED
    client.start_new(
        apps.echo_once, apps.Echo("second", 1.6), instance_id=iid, id_reuse_policy=ALLOW
    )
    status = client.wait_for_status(iid, timeout=60)
    assert status.runtime_status is RuntimeStatus.COMPLETED
    assert status.output == "second"
    assert status.execution_id is not None and status.execution_id != first.execution_id


def test_a_late_child_result_of_an_earlier_parent_execution_is_dropped(
    client: Client,
) -> None:
    """A parent restarted under the same id calls its (default-id) child again; the
    first execution's child must neither answer the second's call nor share its id."""
    iid = f"parent-{uuid.uuid4().hex[:6]}"
    client.start_new(apps.parent_of_one_child, apps.Echo("old child", 0.8), instance_id=iid)
    wait_until(lambda: client.get_status(iid), timeout=30)
    client.terminate(iid)
    client.wait_for_status(iid, timeout=30)
    client.start_new(
        apps.parent_of_one_child,
        apps.Echo("new child", 1.6),
        instance_id=iid,
        id_reuse_policy=ALLOW,
    )
    assert client.wait_for_completion(iid, timeout=60) == "new child"


def test_a_finished_id_is_not_run_again_by_default(
    client: Client, running_app: durafka.App, workdir
) -> None:
    """A service retrying an ambiguous produce re-sends the start: the completed order is
    not run again, and the client gets the existing execution."""
    iid = f"order-{uuid.uuid4().hex[:6]}"
    client.start_new(apps.echo_once, apps.Echo("once", 0.0), instance_id=iid)
    done = client.wait_for_status(iid, timeout=30)
    # The same start from another service, as raw records: one without an execution id
    # (a producer that does not choose one), and a repeat of the first (same one).
    settings = running_app.settings
    topics = HubTopics(settings.task_hub)
    n = running_app.transport.partition_count(topics.orchestrations)
    producer = running_app.transport.producer()
    for execution in (None, done.execution_id):
        start = HistoryEvent(
            EventKind.EXECUTION_STARTED,
            1,
            name="echo_once",
            payload=b'{"value": "again", "seconds": 0.0}',
            execution_id=execution,
        )
        key = iid.encode()
        producer.produce(
            topics.orchestrations, partition_for(key, n), key, encode_message(iid, start)
        )
    producer.flush()
    producer.close()
    # A marker start after them: once it completed, the duplicates were processed.
    marker = client.start_new(apps.echo_once, apps.Echo("marker", 0.0))
    client.wait_for_status(marker, timeout=30)
    wait_until(lambda: _processed_after(running_app, iid), timeout=30)
    records = [s for s in status_records(running_app.transport, settings.task_hub, iid) if s]
    assert [s.runtime_status for s in records] == [RuntimeStatus.RUNNING, RuntimeStatus.COMPLETED]
    assert client.start_new(apps.echo_once, apps.Echo("client", 0.0), instance_id=iid) == iid
    assert client.wait_for_completion(iid, timeout=5) == "once"


def _processed_after(app: durafka.App, iid: str) -> bool:
    """Whether the processor's consumer committed past every record of ``iid``'s partition."""
    topics = HubTopics(app.settings.task_hub)
    transport = app.transport
    n = transport.partition_count(topics.orchestrations)
    consumer = transport.consumer(topics.processor_group)
    from durafka.transport.base import TopicPartition

    tp = TopicPartition(topics.orchestrations, partition_for(iid.encode(), n))
    try:
        committed = consumer.committed([tp])[tp]
        return committed is not None and committed >= consumer.watermarks(tp)[1] - 1
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("policy", "fail", "runs_again"),
    [
        (durafka.IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, True, True),
        (durafka.IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, False, False),
        (durafka.IdReusePolicy.ALLOW_DUPLICATE, False, True),
        (durafka.IdReusePolicy.REJECT_DUPLICATE, True, False),
    ],
)
def test_the_id_reuse_policy_decides_whether_a_finished_id_runs_again(
    client: Client, policy: durafka.IdReusePolicy, fail: bool, runs_again: bool
) -> None:
    iid = f"p-{uuid.uuid4().hex[:6]}"
    client.start_new(apps.fails_or_not, fail, instance_id=iid)
    first = client.wait_for_status(iid, timeout=30)
    client.start_new(apps.fails_or_not, False, instance_id=iid, id_reuse_policy=policy)
    second = client.wait_for_status(iid, timeout=30)
    assert (second.execution_id != first.execution_id) is runs_again
    if runs_again:
        assert second.runtime_status is RuntimeStatus.COMPLETED
    else:
        assert second == first


def test_a_start_of_a_running_child_id_fails_the_parent_s_call(client: Client) -> None:
    """A parent calling a child id that is already running gets an error, not a hang."""
    child = f"busy-{uuid.uuid4().hex[:6]}"
    client.start_new(apps.slow_child, apps.Echo("busy", 3.0), instance_id=child)
    wait_until(lambda: client.get_status(child), timeout=30)
    parent = client.start_new(apps.calls_named_child, child)
    with pytest.raises(OrchestrationFailed, match="already RUNNING"):
        client.wait_for_completion(parent, timeout=30)


def test_every_status_names_its_execution(client: Client, running_app: durafka.App) -> None:
    iid = client.start_new(apps.echo_once, apps.Echo("x", 0.0))
    client.wait_for_status(iid, timeout=30)
    topic = HubTopics(running_app.settings.task_hub).status
    executions = {
        decode_status(v).execution_id
        for k, v in read_topic(running_app.transport, topic)
        if k == iid.encode() and v is not None
    }
    assert len(executions) == 1 and None not in executions
