"""The sync client on memory:// and on the real broker (statuses written by the tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import durafka
from durafka.client import Client
from durafka.codec.records import decode_message
from durafka.errors import (
    FailureDetails,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InstanceNotRunningError,
    OrchestrationFailed,
    PayloadTooLargeError,
    TransportError,
    WaitTimeoutError,
)
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.status import RuntimeStatus
from tests.client.conftest import PARTITIONS, Hub, status


class Order(BaseModel):
    item: str
    quantity: int


class Receipt(BaseModel):
    total_cents: int


async def place_order(ctx: Any, order: Order) -> Receipt:  # never run: only registered
    raise NotImplementedError


async def unregistered(ctx: Any) -> None:
    raise NotImplementedError


@pytest.fixture
def registry() -> Registry:
    r = Registry()
    r.add_orchestration(place_order, name="orders.place")
    return r


@pytest.fixture
def client(env: Hub, registry: Registry) -> Iterator[Client]:
    with Client(env.settings, registry, env.transport) as c:
        yield c


def _events(env: Hub, count: int) -> list[tuple[int, str, HistoryEvent]]:
    """``(partition, instance id, event)`` of the first ``count`` orchestration records."""
    out = []
    for record in env.read_orchestrations(count):
        iid, event = decode_message(record.value() or b"")
        assert record.key() == iid.encode()
        out.append((record.partition() or 0, iid, event))
    return out


def test_start_new_writes_a_decodable_start_record_at_the_key_partition(
    env: Hub, client: Client
) -> None:
    before = time.time_ns() // 1_000_000
    iid = client.start_new(place_order, Order(item="tea", quantity=3), instance_id="order-17")
    assert iid == "order-17"
    [(partition, target, event)] = _events(env, 1)
    assert target == "order-17"
    assert partition == partition_for(b"order-17", PARTITIONS)
    assert event.kind is EventKind.EXECUTION_STARTED
    assert event.name == "orders.place"  # the registered name, not __name__
    assert event.payload == b'{"item":"tea","quantity":3}'
    assert before <= event.timestamp <= time.time_ns() // 1_000_000


def test_start_new_defaults_a_uuid_id_and_the_function_name(env: Hub) -> None:
    # A client without a registry (another service's): any function or name, plain JSON.
    with Client(env.settings, None, env.transport) as client:
        first = client.start_new(unregistered)
        second = client.start_new("by-name", {"a": [1, 2]})
    assert len(first) == 32 and int(first, 16) >= 0 and first != second
    events = {iid: (p, e) for p, iid, e in _events(env, 2)}
    assert events[first][1].name == "unregistered" and events[first][1].payload is None
    assert events[second][1].name == "by-name" and events[second][1].payload == b'{"a":[1,2]}'
    assert events[first][0] == partition_for(first.encode(), PARTITIONS)


def test_payload_too_large_raises_and_writes_nothing(env: Hub, registry: Registry) -> None:
    settings = env.settings_with(max_payload_bytes=64)
    with Client(settings, registry, env.transport) as client:
        with pytest.raises(PayloadTooLargeError, match=r"input of 'orders.place'.*over the limit"):
            client.start_new(place_order, Order(item="x" * 100, quantity=1), instance_id="big")
        env.publish(status("running", RuntimeStatus.RUNNING))
        client.status_view.wait_for("running", lambda s: True, 10)
        with pytest.raises(PayloadTooLargeError, match="event 'approval'"):
            client.raise_event("running", "approval", "y" * 100)
        with pytest.raises(PayloadTooLargeError):
            client.terminate("running", "z" * 100)
        assert client.get_status("big") is None
    assert env.orchestrations_written() == 0


def test_duplicate_start_is_rejected_while_the_view_shows_it_active(
    env: Hub, client: Client
) -> None:
    env.publish(status("dup", RuntimeStatus.RUNNING, name="orders.place"))
    client.status_view.wait_for("dup", lambda s: True, 10)
    with pytest.raises(InstanceAlreadyExistsError, match=r"'dup'.*RUNNING"):
        client.start_new(place_order, Order(item="a", quantity=1), instance_id="dup")
    assert env.orchestrations_written() == 0
    env.publish(status("dup", RuntimeStatus.COMPLETED, output=b'{"total_cents":1}'))
    client.wait_for_status("dup", timeout=10)
    # Finished: by default the start keeps that execution (nothing is written)...
    assert client.start_new(place_order, Order(item="a", quantity=1), instance_id="dup") == "dup"
    assert env.orchestrations_written() == 0
    # ...unless the id reuse policy allows a new one.
    policy = durafka.IdReusePolicy.ALLOW_DUPLICATE
    again = client.start_new(
        place_order, Order(item="a", quantity=1), instance_id="dup", id_reuse_policy=policy
    )
    assert again == "dup"
    [(_, _, event)] = _events(env, 1)
    assert event.id_reuse_policy is policy and event.execution_id is not None


def test_get_status_sees_what_was_published_before_the_client_started(env: Hub) -> None:
    env.publish(status("early", RuntimeStatus.SUSPENDED), transactional=True)
    with Client(env.settings, transport=env.transport) as client:
        found = client.get_status("early")  # waits for the view to catch up, not for "early"
        assert found is not None and found.runtime_status is RuntimeStatus.SUSPENDED
        assert client.get_status("never-started") is None


def test_wait_for_completion_decodes_with_the_output_type(env: Hub, client: Client) -> None:
    env.publish(status("ok", RuntimeStatus.RUNNING, name="orders.place"))

    def complete() -> None:
        time.sleep(0.1)
        env.publish(
            status(
                "ok", RuntimeStatus.COMPLETED, name="orders.place", output=b'{"total_cents":250}'
            )
        )

    writer = threading.Thread(target=complete)
    writer.start()
    result = client.wait_for_completion("ok", timeout=timedelta(seconds=10))
    writer.join()
    assert result == Receipt(total_cents=250)
    env.publish(status("plain", RuntimeStatus.COMPLETED, name="unknown", output=b'{"x":1}'))
    assert client.wait_for_completion("plain", timeout=10) == {"x": 1}


def test_wait_for_completion_raises_on_failed_and_terminated(env: Hub, client: Client) -> None:
    failure = FailureDetails("builtins.ValueError", "no stock", None)
    env.publish(
        status("bad", RuntimeStatus.FAILED, failure_details=failure),
        status("stopped", RuntimeStatus.TERMINATED, output=b'"by operator"'),
    )
    with pytest.raises(OrchestrationFailed, match="ValueError: no stock") as info:
        client.wait_for_completion("bad", timeout=10)
    assert info.value.status is not None and info.value.status.failure_details == failure
    with pytest.raises(OrchestrationFailed, match="TERMINATED: by operator") as info:
        client.wait_for_completion("stopped", timeout=10)
    assert info.value.status is not None
    assert info.value.status.runtime_status is RuntimeStatus.TERMINATED
    assert client.wait_for_completion("bad", timeout=10, raise_on_failure=False) is None


def test_wait_for_status_timeout_names_the_id_and_last_status(env: Hub, client: Client) -> None:
    env.publish(status("stuck", RuntimeStatus.RUNNING))
    client.status_view.wait_for("stuck", lambda s: True, 10)
    start = time.monotonic()
    with pytest.raises(WaitTimeoutError, match=r"'stuck'.*terminal.*0\.2s.*RUNNING") as info:
        client.wait_for_status("stuck", timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert 0.15 < time.monotonic() - start < 2


def test_raise_event_checks_the_instance_and_writes_the_event(env: Hub, client: Client) -> None:
    env.publish(
        status("live", RuntimeStatus.RUNNING),
        status("done", RuntimeStatus.COMPLETED),
    )
    client.status_view.wait_for("live", lambda s: True, 10)
    client.status_view.wait_for("done", lambda s: True, 10)
    with pytest.raises(InstanceNotFoundError, match="'ghost'"):
        client.raise_event("ghost", "approval")
    with pytest.raises(InstanceNotRunningError, match="'done' is COMPLETED"):
        client.raise_event("done", "approval")
    assert env.orchestrations_written() == 0
    client.raise_event("live", "approval", {"by": "ann"})
    [(partition, iid, event)] = _events(env, 1)
    assert (iid, event.kind, event.name) == ("live", EventKind.EVENT_RAISED, "approval")
    assert event.payload == b'{"by":"ann"}'
    assert partition == partition_for(b"live", PARTITIONS)


def test_raise_event_right_after_start_new_is_accepted(env: Hub, client: Client) -> None:
    # The processor has not published a status yet; this client knows it started it.
    iid = client.start_new("orders.place")
    client.raise_event(iid, "go")
    # Same key, same partition: the start comes first.
    assert [e.kind for _, _, e in _events(env, 2)] == [
        EventKind.EXECUTION_STARTED,
        EventKind.EVENT_RAISED,
    ]


def test_terminate_suspend_resume_write_control_events(env: Hub, client: Client) -> None:
    client.suspend("i1", "maintenance")
    client.resume("i1")
    client.terminate("i1", "no longer needed")
    events = [e for _, iid, e in _events(env, 3) if iid == "i1"]
    assert [(e.kind, e.payload) for e in events] == [
        (EventKind.EXECUTION_SUSPENDED, b'"maintenance"'),
        (EventKind.EXECUTION_RESUMED, None),
        (EventKind.EXECUTION_TERMINATED, b'"no longer needed"'),
    ]


def test_close_wakes_waiters_and_refuses_calls(env: Hub, registry: Registry) -> None:
    client = Client(env.settings, registry, env.transport)
    client.status_view.wait_ready(30)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            client.wait_for_status("forever", timeout=30)
        except TransportError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    client.close()
    waiter.join(5)
    assert not waiter.is_alive() and len(errors) == 1 and "closed" in str(errors[0])
    with pytest.raises(TransportError, match="closed"):
        client.start_new(place_order, Order(item="x", quantity=1))
    client.close()  # idempotent


def test_missing_status_topic_is_a_clear_error(env: Hub) -> None:
    settings = env.settings_with(task_hub=f"{env.settings.task_hub}-absent")
    with (
        Client(settings, transport=env.transport) as client,
        pytest.raises(TransportError, match=r"absent\.status"),
    ):
        client.get_status("x")
