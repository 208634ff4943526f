"""Entities end to end, on memory:// and on the real broker."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

import durafka
from durafka import EntityId, RuntimeStatus
from durafka.client import Client
from durafka.codec.records import decode_entity
from durafka.entities import EntityMetadata
from durafka.topology import HubTopics
from tests.entities import apps
from tests.support.topics import read_topic
from tests.support.waiting import wait_until


def wait_state(client: Client, entity: EntityId, expected: object, timeout: float = 60) -> None:
    """Wait until ``get_entity`` shows ``expected`` as the entity's state."""

    def probe() -> bool:
        found = client.get_entity(entity)
        return found is not None and found.state == expected

    wait_until(probe, timeout=timeout, what=f"state {expected!r} of {entity}")


def entity_records(app: durafka.App, entity: EntityId) -> list[bytes | None]:
    """Every committed value of ``entity`` on ``H.entities``, in order."""
    topic = HubTopics(app.settings.task_hub).entities
    key = str(entity).encode()
    return [value for k, value in read_topic(app.transport, topic, timeout=30) if k == key]


# -- the counter ----------------------------------------------------------------------------------


def test_counter_signals_get_and_list(running_app: durafka.App) -> None:
    c = apps.counter("clicks")
    with running_app.sync_client() as client:
        assert client.get_entity(c) is None
        client.signal_entity(c, "add", 5)
        client.signal_entity(c, "add", 2)
        wait_state(client, c, 7)
        client.signal_entity(c, "reset")
        client.signal_entity(c, "add", 1)
        wait_state(client, c, 1)
        found = client.get_entity(c)
        assert isinstance(found, EntityMetadata)
        assert found.entity_id == c
        assert found.serialized_state == b"1"
        assert found.locked_by is None and found.queued == 0 and found.error_count == 0
        assert abs(found.last_modified_at.timestamp() - time.time()) < 120

        client.signal_entity(apps.counter("other"), "add", 3)
        client.signal_entity(EntityId("fcounter", "f"), "add", 4)
        wait_state(client, apps.counter("other"), 3)
        wait_state(client, EntityId("fcounter", "f"), 4)
        everything = client.list_entities()
        assert [m.entity_id for m in everything.items] == sorted(
            [c, apps.counter("other"), EntityId("fcounter", "f")], key=str
        )
        first = client.list_entities(name="Counter", page_size=1)
        assert [m.entity_id for m in first.items] == [c]
        assert first.continuation is not None
        second = client.list_entities(name="Counter", page_size=1, continuation=first.continuation)
        assert [(m.entity_id, m.state) for m in second.items] == [(apps.counter("other"), 3)]
        assert second.continuation is None


def test_call_entity_from_an_orchestration(running_app: durafka.App) -> None:
    with running_app.sync_client() as client:
        client.signal_entity(apps.counter("called"), "add", 100)
        iid = client.start_new(apps.counter_calls, "called")
        assert client.wait_for_completion(iid, timeout=60) == 108
        wait_state(client, apps.counter("called"), 108)


async def test_async_client_signals_and_reads(running_app: durafka.App) -> None:
    f = EntityId("fcounter", "async")
    async with running_app.client() as client:
        assert await client.get_entity(f) is None
        await client.signal_entity(f, "add", 20)
        await client.signal_entity(f, "add", 22)
        deadline = time.monotonic() + 60
        while (found := await client.get_entity(f)) is None or found.state != 42:
            assert time.monotonic() < deadline, f"state of {f}: {found}"
            await asyncio.sleep(0.02)
        page = await client.list_entities(name="fcounter")
        assert [m.state for m in page.items] == [42]
        iid = await client.start_new(apps.counter_calls, "async-calls")
        assert await client.wait_for_completion(iid, timeout=60) == 8


def test_orchestration_instance_ids_may_not_look_like_entity_ids(running_app: durafka.App) -> None:
    with running_app.sync_client() as client, pytest.raises(ValueError, match="entity ids"):
        client.start_new(apps.counter_calls, "x", instance_id="@Counter@x")


# -- errors and deletion --------------------------------------------------------------------------


def test_an_operation_error_rolls_back_that_operation_only(running_app: durafka.App) -> None:
    ledger = EntityId("Ledger", "l1")
    with running_app.sync_client() as client:
        client.signal_entity(ledger, "record", "a")
        client.signal_entity(ledger, "record_then_fail", "b")
        client.signal_entity(ledger, "record", "cc")
        wait_state(client, ledger, apps.LedgerState(["a", "cc"], 3))
        found = client.get_entity(ledger)
        assert found is not None
        assert found.error_count == 1
        assert found.last_error is not None
        assert found.last_error.error_type.endswith("LedgerError")
        assert "cannot record 'b'" in found.last_error.message

        # The caller of a failing operation gets the error; the state keeps the rest.
        iid = client.start_new(apps.ledger_failure, "l2")
        out = client.wait_for_completion(iid, timeout=60)
        assert out == "LedgerError: cannot record 'bad' / total 11"
        wait_state(client, EntityId("Ledger", "l2"), apps.LedgerState(["first", "second"], 11))


def test_delete_entity_removes_the_state_and_writes_a_tombstone(
    running_app: durafka.App,
) -> None:
    c = apps.counter("doomed")
    with running_app.sync_client() as client:
        client.signal_entity(c, "add", 9)
        wait_state(client, c, 9)
        client.delete_entity(c)
        wait_until(lambda: client.get_entity(c) is None, timeout=60, what="deletion")
        assert c not in [m.entity_id for m in client.list_entities().items]
        values = entity_records(running_app, c)
        assert values[-1] is None, "no tombstone on H.entities"
        assert values[0] is not None and decode_entity(values[0]).state == b"9"
        # A deleted entity starts again from its initial state.
        client.signal_entity(c, "add", 1)
        wait_state(client, c, 1)
        # Function entities delete their own state too.
        f = EntityId("fcounter", "gone")
        client.signal_entity(f, "add", 2)
        wait_state(client, f, 2)
        client.signal_entity(f, "clear")
        wait_until(lambda: client.get_entity(f) is None, timeout=60, what="clear")


# -- locks ----------------------------------------------------------------------------------------


def test_a_lock_is_released_when_the_orchestration_fails_or_is_terminated(
    running_app: durafka.App,
) -> None:
    with running_app.sync_client() as client:
        failed = client.start_new(apps.fails_inside_lock, "f")
        status = client.wait_for_status(failed, timeout=60)
        assert status.runtime_status is RuntimeStatus.FAILED
        assert status.failure_details is not None
        assert "failing while holding the lock" in status.failure_details.message
        after_failure = client.start_new(apps.lock_and_add, "f")
        assert client.wait_for_completion(after_failure, timeout=60) == 11

        holder = client.start_new(apps.holds_lock, "t")
        wait_state(client, apps.counter("t"), 1)
        # Queued behind the holder's lock: neither the signal nor the lock may run yet.
        client.signal_entity(apps.counter("t"), "add", 100)
        waiter = client.start_new(apps.lock_and_add, "t")
        wait_until(
            lambda: (e := client.get_entity(apps.counter("t"))) is not None and e.queued == 2,
            timeout=60,
            what="two queued operations",
        )
        found = client.get_entity(apps.counter("t"))
        assert found is not None and found.state == 1 and found.locked_by == holder
        st = client.get_status(waiter)
        assert st is not None and st.runtime_status is RuntimeStatus.RUNNING
        client.terminate(holder, "test over")
        assert client.wait_for_completion(waiter, timeout=60) == 111
        wait_until(
            lambda: (
                (e := client.get_entity(apps.counter("t"))) is not None
                and e.locked_by is None
                and e.queued == 0
            ),
            timeout=60,
            what="the lock to go",
        )


def test_a_sub_orchestration_inside_a_lock_fails_instead_of_deadlocking(
    running_app: durafka.App,
) -> None:
    with running_app.sync_client() as client:
        parent = client.start_new(apps.child_inside_lock, "d")
        status = client.wait_for_status(parent, timeout=60)
        assert status.runtime_status is RuntimeStatus.FAILED
        assert status.failure_details is not None
        assert "inside a ctx.lock block" in status.failure_details.message
        assert client.get_status(f"{parent}:1") is None, "the child was started"
        # The parent's lock was released: the same child runs outside any lock.
        child = client.start_new(apps.add_to_counter, "d")
        assert client.wait_for_completion(child, timeout=60) == 1


# -- load -----------------------------------------------------------------------------------------


def test_10000_signals_from_100_orchestrations_count_exactly(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    c = apps.counter("load")
    with app.running(worker=False), app.sync_client() as client:
        started = time.monotonic()
        ids = [
            client.start_new(apps.signal_many, apps.SignalMany("load", 100), instance_id=f"s-{i}")
            for i in range(100)
        ]
        wait_state(client, c, 10_000, timeout=120)
        elapsed = time.monotonic() - started
        for iid in ids:
            assert client.wait_for_completion(iid, timeout=60) == 100
        # Nothing more arrives later: the count stays exact.
        time.sleep(0.5)
        found = client.get_entity(c)
        assert found is not None and found.state == 10_000
    print(f"10,000 signals counted in {elapsed:.1f}s")


def test_bank_transfers_under_locks_keep_the_total(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    accounts, transfers, audits = 20, 200, 5
    with app.running(worker=False), app.sync_client() as client:
        for i in range(accounts):
            client.signal_entity(apps.account(i), "deposit", 100)
        for i in range(accounts):
            wait_state(client, apps.account(i), 100)
        ids = start_transfers(client, accounts, transfers, audits)
        check_bank(client, ids, accounts, timeout=180)


def start_transfers(
    client: Client, accounts: int, transfers: int, audits: int, prefix: str = "t"
) -> dict[str, str]:
    """Start the transfers (each moving 30..80 between two accounts) and the audits."""
    rng = random.Random(7)
    ids: dict[str, str] = {}
    for n in range(transfers):
        source, target = rng.sample(range(accounts), 2)
        t = apps.Transfer(source, target, rng.randint(30, 80))
        ids[client.start_new(apps.transfer, t, instance_id=f"{prefix}-{n}")] = "transfer"
        if n % (transfers // audits) == 0:
            ids[client.start_new(apps.audit, accounts, instance_id=f"{prefix}-audit-{n}")] = "audit"
    return ids


def check_bank(client: Client, ids: dict[str, str], accounts: int, timeout: float) -> None:
    """Every transfer and audit completed, audits saw the full total, no account went negative."""
    total = 100 * accounts
    moved = 0
    for iid, kind in ids.items():
        out = client.wait_for_completion(iid, timeout=timeout)
        if kind == "audit":
            assert out == total, f"audit {iid} saw {out} instead of {total}"
        else:
            assert 0 <= out <= 80
            moved += out
    assert moved > 0, "no transfer moved anything"

    def settled() -> list[EntityMetadata] | None:
        found = [client.get_entity(apps.account(i)) for i in range(accounts)]
        if any(f is None or f.locked_by is not None or f.queued for f in found):
            return None
        return [f for f in found if f is not None]

    final = wait_until(settled, timeout=60, what="every account unlocked")
    balances = [f.state for f in final]
    assert sum(balances) == total, balances
    assert min(balances) >= 0, balances
