"""Sub-orchestrations across partitions: results, catchable failures, termination of children."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from durafka import RuntimeStatus
from durafka.client import Client
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind
from tests.features import apps
from tests.features.helpers import has_status
from tests.support.waiting import wait_until

PARTITIONS = 4


def test_children_on_other_partitions_return_results_and_failures(client: Client) -> None:
    iid = client.start_new(apps.parent_of_squares, 8, instance_id="parent-squares")
    out = client.wait_for_completion(iid, timeout=60)

    assert out["results"] == [i * i for i in range(8)]
    assert "ValueError" in out["caught"] and "cannot square a negative number: -1" in out["caught"]

    history = client.get_history(iid)
    children = [e.instance_id for e in history if e.kind is EventKind.SUB_ORCHESTRATION_CREATED]
    assert len(children) == 9
    parent_partition = partition_for(iid.encode(), PARTITIONS)
    child_partitions = {partition_for(c.encode(), PARTITIONS) for c in children if c}
    assert child_partitions - {parent_partition}, "no child ran on another partition"
    for child in children:
        assert child is not None
        status = client.get_status(child)
        assert status is not None and status.parent_instance_id == iid
    bad = client.get_status(f"{iid}-bad")
    assert bad is not None and bad.runtime_status is RuntimeStatus.FAILED


def test_terminate_with_reason_terminates_running_children(client: Client) -> None:
    iid = client.start_new(apps.parent_of_waiters, 3, instance_id="parent-waiters")
    children = [f"{iid}-c{i}" for i in range(3)]
    for child in children:
        running = partial(has_status, client, child, RuntimeStatus.RUNNING)
        wait_until(running, timeout=60, what=f"{child} running")
    client.terminate(iid, "customer cancelled")

    status = client.wait_for_status(iid, timeout=60)
    assert status.runtime_status is RuntimeStatus.TERMINATED
    assert status.output == "customer cancelled"
    for child in children:
        child_status = client.wait_for_status(child, timeout=60)
        assert child_status.runtime_status is RuntimeStatus.TERMINATED
        assert child_status.output == "customer cancelled"
    assert [e.kind for e in client.get_history(iid)][-1] is EventKind.EXECUTION_TERMINATED


def test_failed_sub_orchestration_is_retried_as_a_new_child(client: Client, workdir: Path) -> None:
    iid = client.start_new(apps.retries_child, apps.Flaky(str(workdir), "child", 2))
    assert client.wait_for_completion(iid, timeout=60) == "child succeeded on run 3"
    history = client.get_history(iid)
    children = [e.instance_id for e in history if e.kind is EventKind.SUB_ORCHESTRATION_CREATED]
    assert len(children) == 3 and len(set(children)) == 3
    outcomes = []
    for child in children:
        assert child is not None
        status = client.get_status(child)
        assert status is not None
        outcomes.append(status.runtime_status)
    assert outcomes == [RuntimeStatus.FAILED, RuntimeStatus.FAILED, RuntimeStatus.COMPLETED]
    assert [e.kind for e in history].count(EventKind.TIMER_FIRED) == 2
