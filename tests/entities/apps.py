"""Entities and orchestrations of the entity tests (importable by processor subprocesses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import durafka
from durafka import EntityContext, EntityId, OrchestrationContext

app = durafka.App()  # settings from DURAFKA_* (subprocesses) or overridden by tests


# -- entities ---------------------------------------------------------------------------------


@app.entity
class Counter(durafka.Entity[int]):
    """The seed's counter."""

    def add(self, amount: int) -> None:
        self.state += amount

    def reset(self) -> None:
        self.state = 0

    def get(self) -> int:
        return self.state


@app.entity(name="fcounter")
def function_counter(ctx: EntityContext) -> Any:
    """The counter as a function-based entity."""
    value = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(value + ctx.input(int))
    elif ctx.operation == "reset":
        ctx.set_state(0)
    elif ctx.operation == "get":
        return value
    elif ctx.operation == "clear":
        ctx.delete_state()
    else:
        raise ValueError(f"unknown operation {ctx.operation!r}")
    return None


@app.entity
class Account(durafka.Entity[int]):
    """A bank account. ``withdraw`` does not check the balance, so a broken lock shows."""

    def deposit(self, amount: int) -> None:
        self.state += amount

    def withdraw(self, amount: int) -> None:
        self.state -= amount

    def balance(self) -> int:
        return self.state


@dataclass
class LedgerState:
    entries: list[str] = field(default_factory=list)
    total: int = 0


class LedgerError(Exception):
    """A business error raised by an entity operation."""


@app.entity
class Ledger(durafka.Entity[LedgerState]):
    """A dataclass state; ``record_then_fail`` changes it and raises (rolled back)."""

    def record(self, entry: str) -> int:
        self.state.entries.append(entry)
        self.state.total += len(entry)
        return self.state.total

    def record_then_fail(self, entry: str) -> None:
        self.state.entries.append(entry)
        self.state.total += 1000
        raise LedgerError(f"cannot record {entry!r}")

    def get(self) -> LedgerState:
        return self.state


# -- orchestrations ------------------------------------------------------------------------------


def counter(key: str) -> EntityId:
    return EntityId("Counter", key)


def account(i: int) -> EntityId:
    return EntityId("Account", f"acct-{i:02d}")


@app.orchestration
async def counter_calls(ctx: OrchestrationContext, key: str) -> int:
    await ctx.call_entity(counter(key), "add", 5)
    await ctx.call_entity(counter(key), "add", 3)
    return int(await ctx.call_entity(counter(key), "get"))


@dataclass
class SignalMany:
    key: str
    n: int


@app.orchestration
async def signal_many(ctx: OrchestrationContext, args: SignalMany) -> int:
    for _ in range(args.n):
        ctx.signal_entity(counter(args.key), "add", 1)
    return args.n


@dataclass
class Transfer:
    source: int
    target: int
    amount: int


@app.orchestration
async def transfer(ctx: OrchestrationContext, t: Transfer) -> int:
    """Moves up to ``amount`` (never more than the balance read inside the lock)."""
    source, target = account(t.source), account(t.target)
    async with ctx.lock(source, target):
        balance = await ctx.call_entity(source, "balance")
        amount = min(t.amount, balance)
        if amount > 0:
            await ctx.when_all(
                [
                    ctx.call_entity(source, "withdraw", amount),
                    ctx.call_entity(target, "deposit", amount),
                ]
            )
    return int(amount)


@app.orchestration
async def audit(ctx: OrchestrationContext, accounts: int) -> int:
    """The sum of every balance, read inside one lock on all accounts."""
    ids = [account(i) for i in range(accounts)]
    async with ctx.lock(*ids):
        balances = await ctx.when_all([ctx.call_entity(i, "balance") for i in ids])
    return sum(balances)


@app.orchestration
async def ledger_failure(ctx: OrchestrationContext, key: str) -> str:
    ledger = EntityId("Ledger", key)
    await ctx.call_entity(ledger, "record", "first")
    try:
        await ctx.call_entity(ledger, "record_then_fail", "bad")
    except durafka.EntityOperationFailed as exc:
        failed = f"{exc.details.error_type.rsplit('.', 1)[-1]}: {exc.details.message}"
    else:
        failed = "no error"
    total = await ctx.call_entity(ledger, "record", "second")
    return f"{failed} / total {total}"


@app.orchestration
async def fails_inside_lock(ctx: OrchestrationContext, key: str) -> None:
    async with ctx.lock(counter(key)):
        await ctx.call_entity(counter(key), "add", 1)
        raise RuntimeError("failing while holding the lock")


@app.orchestration
async def add_to_counter(ctx: OrchestrationContext, key: str) -> int:
    await ctx.call_entity(counter(key), "add", 1)
    return int(await ctx.call_entity(counter(key), "get"))


@app.orchestration
async def child_inside_lock(ctx: OrchestrationContext, key: str) -> None:
    """Refused: the child would wait for the lock its parent holds (a deadlock)."""
    async with ctx.lock(counter(key)):
        await ctx.call_sub_orchestrator(add_to_counter, key)


@app.orchestration
async def holds_lock(ctx: OrchestrationContext, key: str) -> None:
    async with ctx.lock(counter(key), counter(key + "-2")):
        await ctx.call_entity(counter(key), "add", 1)
        await ctx.wait_for_external_event("never")


@app.orchestration
async def lock_and_add(ctx: OrchestrationContext, key: str) -> int:
    async with ctx.lock(counter(key)):
        await ctx.call_entity(counter(key), "add", 10)
        return int(await ctx.call_entity(counter(key), "get"))


@app.orchestration
async def lock_or_report(ctx: OrchestrationContext, key: str) -> str:
    """Takes the counter's lock; reports a failed lock instead of failing."""
    try:
        async with ctx.lock(counter(key)):
            await ctx.call_entity(counter(key), "add", 1)
    except durafka.TaskFailedError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "locked"


@app.orchestration
async def call_or_report(ctx: OrchestrationContext, key: str) -> str:
    """Calls the counter; reports a failed call instead of failing."""
    try:
        await ctx.call_entity(counter(key), "add", 1)
    except durafka.TaskFailedError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "called"
