"""The orchestration side of entities on built histories: pure, no I/O.

Every :class:`~tests.runtime.helpers.Run` step also checks that a fresh replay
of the history reproduces the live executor, so these are replay tests too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import durafka
from durafka import EntityId
from durafka.codec.payload import decode_payload, encode_payload
from durafka.errors import FailureDetails
from durafka.registry import Registry
from durafka.runtime.context import OrchestrationContext
from durafka.runtime.history import EventKind, HistoryEvent
from tests.runtime.helpers import Run, details_of, replay_fresh

Ctx = OrchestrationContext
K = EventKind
A = EntityId("Account", "a")
B = EntityId("Account", "b")
C = EntityId("Account", "c")


class Account(durafka.Entity[int]):
    def deposit(self, amount: int) -> None:
        self.state += amount

    def balance(self) -> int:
        return self.state


def response(seq: int, value: Any = None, *, entity: EntityId = A) -> HistoryEvent:
    """ENTITY_RESPONSE for the call at ``seq``."""
    payload = None if value is None else encode_payload(value)
    return HistoryEvent(K.ENTITY_RESPONSE, 0, seq=seq, payload=payload, instance_id=str(entity))


def failed_response(seq: int, exc: BaseException, *, entity: EntityId = A) -> HistoryEvent:
    return HistoryEvent(
        K.ENTITY_RESPONSE, 0, seq=seq, failure=details_of(exc), instance_id=str(entity)
    )


def granted(seq: int) -> HistoryEvent:
    return HistoryEvent(K.LOCK_GRANTED, 0, seq=seq, instance_id=str(C))


def run_of(fn: Any, *, entities: bool = True) -> Run:
    reg = Registry()
    reg.add_orchestration(fn, name="orch")
    if entities:
        reg.add_entity(Account)
    return Run(reg, "orch")


def output(run: Run) -> Any:
    c = run.last.completion
    assert c is not None and c.kind is K.EXECUTION_COMPLETED, c
    return decode_payload(c.payload)


# -- call_entity and signal_entity -------------------------------------------------------------


async def deposits_and_reads(ctx: Ctx) -> int:
    await ctx.call_entity(A, "deposit", 5)
    ctx.signal_entity(B, "deposit", 1)
    return int(await ctx.call_entity(A, "balance"))


def test_call_entity_records_a_call_and_returns_the_response() -> None:
    run = run_of(deposits_and_reads)
    run.start()
    [call] = run.last.actions
    assert (call.kind, call.seq, call.name, call.instance_id) == (
        K.ENTITY_CALLED,
        0,
        "deposit",
        "@Account@a",
    )
    assert call.payload == b"5"
    run.step(response(0))
    signal, get = run.last.actions
    assert (signal.kind, signal.seq, signal.instance_id, signal.payload) == (
        K.ENTITY_SIGNALED,
        1,
        "@Account@b",
        b"1",
    )
    assert (get.kind, get.seq, get.name, get.payload) == (K.ENTITY_CALLED, 2, "balance", None)
    # The signal waits for nothing: a response for its seq is not awaited.
    assert not run.executor.is_waiting_for(response(1))
    assert run.executor.is_waiting_for(response(2))
    run.step(response(2, 41))
    assert output(run) == 41


def test_a_duplicate_response_is_not_awaited_twice() -> None:
    run = run_of(deposits_and_reads)
    run.start()
    run.step(response(0))
    assert not run.executor.is_waiting_for(response(0))


def test_the_result_is_decoded_with_the_operation_return_type() -> None:
    async def reads(ctx: Ctx) -> str:
        value = await ctx.call_entity(A, "balance")
        return type(value).__name__

    run = run_of(reads)
    run.start()
    run.step(response(0, "12"))  # JSON "12" validated (lax mode) as the declared int
    assert output(run) == "int"


async def catches_a_failed_operation(ctx: Ctx) -> str:
    try:
        await ctx.call_entity(A, "deposit", -1)
    except durafka.EntityOperationFailed as exc:
        assert isinstance(exc, durafka.TaskFailedError)
        return f"{exc.details.error_type}|{exc}"
    return "no error"


def test_a_failed_operation_raises_entity_operation_failed() -> None:
    run = run_of(catches_a_failed_operation)
    run.start()
    run.step(failed_response(0, ValueError("negative amount")))
    error_type, message = output(run).split("|")
    assert error_type == "builtins.ValueError"
    assert "'deposit' on entity @Account@a failed" in message and "negative amount" in message


def test_an_uncaught_failed_operation_fails_the_orchestration_with_its_traceback() -> None:
    async def does_not_catch(ctx: Ctx) -> None:
        await ctx.call_entity(A, "deposit", -1)

    run = run_of(does_not_catch)
    run.start()
    run.step(failed_response(0, ValueError("negative amount")))
    c = run.last.completion
    assert c is not None and c.kind is K.EXECUTION_FAILED and c.failure is not None
    assert c.failure.error_type == "durafka.errors.EntityOperationFailed"
    assert c.failure.stack_trace and "Caused by builtins.ValueError" in c.failure.stack_trace


def test_entity_calls_need_an_entity_id() -> None:
    async def passes_a_string(ctx: Ctx) -> None:
        await ctx.call_entity("@Account@a", "balance")  # type: ignore[arg-type]

    run = run_of(passes_a_string)
    run.start()
    c = run.last.completion
    assert c is not None and c.failure is not None
    assert "EntityId" in c.failure.message


def test_inputs_are_checked_against_the_operation_input_type() -> None:
    async def bad_input(ctx: Ctx) -> None:
        await ctx.call_entity(A, "deposit", object())

    run = run_of(bad_input)
    run.start()
    c = run.last.completion
    assert c is not None and c.failure is not None
    assert c.failure.error_type == "durafka.errors.SerializationError"
    assert run.last.actions == []


# -- locks ---------------------------------------------------------------------------------------


async def transfers(ctx: Ctx) -> list[str]:
    async with ctx.lock(B, A):
        held = ctx.locked_entities
        await ctx.call_entity(A, "deposit", 1)
        ctx.signal_entity(C, "deposit", 1)  # signals to other entities are allowed
    return [*held, *ctx.locked_entities]


def test_lock_acquires_in_sorted_order_and_releases_on_exit() -> None:
    run = run_of(transfers)
    run.start()
    [request] = run.last.actions
    assert request.kind is K.LOCK_REQUESTED and request.seq == 0
    assert json.loads(request.payload or b"") == ["@Account@a", "@Account@b"]
    assert run.executor.is_waiting_for(granted(0))
    assert not run.executor.is_waiting_for(response(0)), "a response is not a grant"
    run.step(granted(0))
    [call] = run.last.actions
    assert call.kind is K.ENTITY_CALLED and call.seq == 1
    run.step(response(1))
    signal, release = run.last.actions
    assert signal.kind is K.ENTITY_SIGNALED
    assert release.kind is K.LOCK_RELEASED and release.seq == 3
    assert json.loads(release.payload or b"") == ["@Account@a", "@Account@b"]
    assert output(run) == ["@Account@a", "@Account@b"]  # held inside, none after


def test_an_exception_inside_the_lock_still_releases_it() -> None:
    async def fails_inside(ctx: Ctx) -> None:
        async with ctx.lock(A):
            raise RuntimeError("boom")

    run = run_of(fails_inside)
    run.start()
    run.step(granted(0))
    [release] = run.last.actions
    assert release.kind is K.LOCK_RELEASED
    c = run.last.completion
    assert c is not None and c.kind is K.EXECUTION_FAILED


def test_a_failed_grant_raises_entity_lock_failed_and_releases_what_was_locked() -> None:
    async def locks_twice(ctx: Ctx) -> str:
        try:
            async with ctx.lock(A, B):
                return "inside"
        except durafka.EntityLockFailed as exc:
            first = str(exc)
        async with ctx.lock(A):  # the failed lock left nothing held
            await ctx.call_entity(A, "deposit", 1)
        return first

    run = run_of(locks_twice)
    run.start()
    failure = FailureDetails("builtins.RuntimeError", "the entity broke")
    run.step(HistoryEvent(K.LOCK_GRANTED, 0, seq=0, failure=failure, instance_id=str(B)))
    release, again = run.last.actions
    # a was locked before b failed: the release goes to both (b ignores it).
    assert release.kind is K.LOCK_RELEASED and release.seq == 1
    assert json.loads(release.payload or b"") == ["@Account@a", "@Account@b"]
    assert again.kind is K.LOCK_REQUESTED and again.seq == 2
    run.step(granted(2))
    run.step(response(3))
    assert "the entity broke" in output(run) and "@Account@b" in output(run)


def test_continue_as_new_inside_the_lock_releases_it() -> None:
    async def restarts(ctx: Ctx, n: int) -> None:
        async with ctx.lock(A):
            ctx.continue_as_new(n + 1)

    run = run_of(restarts)
    run.start(0)
    run.step(granted(0))
    [release] = run.last.actions
    assert release.kind is K.LOCK_RELEASED
    c = run.last.completion
    assert c is not None and c.kind is K.CONTINUED_AS_NEW


def test_locks_do_not_nest() -> None:
    async def nests(ctx: Ctx) -> None:
        async with ctx.lock(A), ctx.lock(B):
            pass

    run = run_of(nests)
    run.start()
    run.step(granted(0))
    c = run.last.completion
    assert c is not None and c.failure is not None
    assert c.failure.error_type == "durafka.errors.OrchestrationUsageError"
    assert "already locking" in c.failure.message
    # The outer lock is released on the way out.
    assert [a.kind for a in run.last.actions] == [K.LOCK_RELEASED]


def test_calling_an_entity_outside_the_lock_set_is_refused() -> None:
    async def calls_unlocked(ctx: Ctx) -> None:
        async with ctx.lock(A):
            await ctx.call_entity(B, "balance")

    run = run_of(calls_unlocked)
    run.start()
    run.step(granted(0))
    c = run.last.completion
    assert c is not None and c.failure is not None
    assert "does not lock it" in c.failure.message
    assert [a.kind for a in run.last.actions] == [K.LOCK_RELEASED]


def test_calling_a_sub_orchestration_inside_the_lock_is_refused() -> None:
    async def child(ctx: Ctx) -> None:
        await ctx.call_entity(A, "balance")

    async def calls_child(ctx: Ctx) -> None:
        async with ctx.lock(A):
            await ctx.call_sub_orchestrator(child)

    run = run_of(calls_child)
    run.registry.add_orchestration(child, name="child")
    run.start()
    run.step(granted(0))
    c = run.last.completion
    assert c is not None and c.failure is not None
    assert c.failure.error_type == "durafka.errors.OrchestrationUsageError"
    assert "sub-orchestration 'child' inside a ctx.lock block" in c.failure.message
    # No child was started, and the lock is released on the way out.
    assert [a.kind for a in run.last.actions] == [K.LOCK_RELEASED]


def test_an_empty_lock_is_an_error() -> None:
    async def locks_nothing(ctx: Ctx) -> None:
        async with ctx.lock():
            pass

    run = run_of(locks_nothing)
    run.start()
    c = run.last.completion
    assert c is not None and c.failure is not None and "at least one" in c.failure.message


# -- replay and non-determinism ------------------------------------------------------------------


def _replayed(fn: Any, history: list[HistoryEvent], *new: HistoryEvent) -> FailureDetails:
    reg = Registry()
    reg.add_orchestration(fn, name="orch")
    reg.add_entity(Account)
    result = replay_fresh(reg, "inst-1", "orch", history).step(list(new))
    assert result.actions == [], "a diverged orchestrator must not emit actions"
    c = result.completion
    assert c is not None and c.failure is not None
    assert c.failure.error_type == "durafka.errors.NonDeterminismError"
    return c.failure


def test_replay_reproduces_a_locked_section() -> None:
    run = run_of(transfers)
    run.start()
    run.step(granted(0))
    run.step(response(1))
    fresh = replay_fresh(run.registry, "inst-1", "orch", run.history)
    assert fresh.is_complete
    assert fresh.step([]).actions == []


def test_nondeterminism_another_operation() -> None:
    run = run_of(deposits_and_reads)
    run.start()

    async def withdraws(ctx: Ctx) -> int:
        await ctx.call_entity(A, "withdraw", 5)
        return 0

    f = _replayed(withdraws, run.history, response(0))
    assert "#0" in f.message
    assert "call_entity('@Account@a', 'deposit')" in f.message
    assert "call_entity('@Account@a', 'withdraw')" in f.message


def test_nondeterminism_another_entity() -> None:
    run = run_of(deposits_and_reads)
    run.start()

    async def other_entity(ctx: Ctx) -> int:
        await ctx.call_entity(B, "deposit", 5)
        return 0

    f = _replayed(other_entity, run.history, response(0))
    assert "@Account@a" in f.message and "@Account@b" in f.message


def test_nondeterminism_a_signal_instead_of_a_call() -> None:
    run = run_of(deposits_and_reads)
    run.start()

    async def signals(ctx: Ctx) -> int:
        ctx.signal_entity(A, "deposit", 5)
        await ctx.wait_for_external_event("x")
        return 0

    f = _replayed(signals, run.history)
    assert "signal_entity" in f.message and "call_entity" in f.message


def test_nondeterminism_another_lock_set() -> None:
    run = run_of(transfers)
    run.start()

    async def locks_a_and_c(ctx: Ctx) -> None:
        async with ctx.lock(A, C):
            pass

    f = _replayed(locks_a_and_c, run.history, granted(0))
    assert "lock('@Account@a', '@Account@b')" in f.message
    assert "lock('@Account@a', '@Account@c')" in f.message


def test_unregistered_entities_are_called_with_plain_json() -> None:
    async def calls(ctx: Ctx) -> Any:
        return await ctx.call_entity(EntityId("elsewhere", "k"), "op", {"x": 1})

    run = run_of(calls, entities=False)
    run.start()
    [call] = run.last.actions
    assert call.payload == b'{"x":1}'
    run.step(response(0, {"y": [1, 2]}, entity=EntityId("elsewhere", "k")))
    assert output(run) == {"y": [1, 2]}


@pytest.mark.parametrize("bad", ["", "a@b"])
def test_entity_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="entity name"):
        EntityId(bad, "k")
