"""Core orchestration behaviour end to end, on memory:// and on the real broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import durafka
from durafka import RuntimeStatus
from durafka.client import Client
from tests.e2e import apps
from tests.support.waiting import wait_until


async def test_hello_world_async_client(running_app: durafka.App) -> None:
    async with running_app.client() as client:
        instance_id = await client.start_new(apps.hello_world, "World")
        assert await client.wait_for_completion(instance_id, timeout=60) == "Hello, World!"
        status = await client.get_status(instance_id)
        assert status is not None
        assert status.runtime_status is RuntimeStatus.COMPLETED
        assert status.name == "hello_world"
        assert status.input == "World"
        assert status.created_at <= status.last_updated_at


def test_sequence_of_five_activities(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        iid = client.start_new(apps.sequence, 10)
        assert client.wait_for_completion(iid, timeout=60) == 15


def test_fan_out_fan_in_100(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        iid = client.start_new("fan_out", 100)
        assert client.wait_for_completion(iid, timeout=60) == sum(2 * i for i in range(100))


def test_many_instances_in_parallel(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        ids = [client.start_new(apps.hello_world, f"n{i}") for i in range(50)]
        outputs = [client.wait_for_completion(i, timeout=60) for i in ids]
    assert outputs == [f"Hello, n{i}!" for i in range(50)]


def test_activity_exception_caught_in_orchestration(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        iid = client.start_new(apps.checkout, apps.Order("book", 0))
        assert client.wait_for_completion(iid, timeout=60) == "declined: PaymentDeclined"
        status = client.get_status(iid)
        assert status is not None
        assert status.custom_status == {"declined": "cannot charge 0 x book"}
        ok = client.start_new(apps.checkout, apps.Order("book", 2))
        assert client.wait_for_completion(ok, timeout=60) == "charged 2 x book"


def test_uncaught_activity_exception_fails_instance(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        iid = client.start_new(apps.checkout_uncaught, apps.Order("pen", -1))
        status = client.wait_for_status(iid, timeout=60)
        assert status.runtime_status is RuntimeStatus.FAILED
        details = status.failure_details
        assert details is not None
        assert "PaymentDeclined" in details.error_type or "PaymentDeclined" in details.message
        assert "cannot charge -1 x pen" in details.message
        assert details.stack_trace and "charge" in details.stack_trace
        with pytest.raises(durafka.OrchestrationFailed):
            client.wait_for_completion(iid, timeout=5)


def test_unknown_orchestration_fails_with_clear_message(running_app: durafka.App) -> None:
    # The app's own client refuses the name (tests/client/test_start_validation.py); a
    # client without a registry, as another service's, sends it to the processor.
    running_app.ensure_topics()
    with Client(running_app.settings, None, running_app.transport) as client:
        iid = client.start_new("no_such_orchestration", 1)
        status = client.wait_for_status(iid, timeout=60)
        assert status.runtime_status is RuntimeStatus.FAILED
        assert status.failure_details is not None
        assert "no_such_orchestration" in status.failure_details.message
        # The processor is still healthy afterwards (no crash loop).
        ok = client.start_new(apps.hello_world, "after")
        assert client.wait_for_completion(ok, timeout=60) == "Hello, after!"


def test_unknown_activity_fails_with_clear_message_after_the_grace_period(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(unknown_activity_grace_ms=500)
    with app.running(), app.sync_client() as client:
        iid = client.start_new(apps.calls_unknown_activity)
        status = client.wait_for_status(iid, timeout=60)
        assert status.runtime_status is RuntimeStatus.FAILED
        assert status.failure_details is not None
        assert "no_such_activity" in status.failure_details.message
        assert "unknown_activity_grace_ms" in status.failure_details.message


def test_payload_over_limit_is_rejected_before_writing(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(max_payload_bytes=1000)
    with app.running(), app.sync_client() as client:
        with pytest.raises(durafka.PayloadTooLargeError, match="1000"):
            client.start_new(apps.hello_world, "x" * 5000, instance_id="too-big")
        assert client.get_status("too-big") is None


def test_duplicate_start_of_running_instance_is_rejected(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        iid = client.start_new(apps.waits_forever, instance_id="dup-1")
        running = wait_until(lambda: client.get_status(iid), timeout=60)
        assert running.runtime_status is RuntimeStatus.RUNNING
        with pytest.raises(durafka.InstanceAlreadyExistsError, match="dup-1"):
            client.start_new(apps.waits_forever, instance_id="dup-1")
        client.terminate(iid, "test over")
        status = client.wait_for_status(iid, timeout=60)
        assert status.runtime_status is RuntimeStatus.TERMINATED
