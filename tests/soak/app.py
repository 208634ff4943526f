"""The soak's orchestrations, activities and entities (imported by every role process).

Child processes run ``python -m durafka.cli processor tests.soak.app:app``; their
settings come from ``DURAFKA_*`` variables. The soak's own process uses the
registry of :data:`app` with settings of its own.

Every output is a function of the input alone (a transfer's: of the balances
it reads under its lock), so the soak knows in advance what each instance must
end with (:mod:`tests.soak.workload`). The entities and the entity
orchestrations are the entity tests' own (:mod:`tests.entities.apps`). Every activity
call carries a ``tag`` naming the instance, the generation and the step, and
each execution appends its tag to a file of the executing process under
``DURAFKA_SOAK_MARKER_DIR``: how often each call ran (at least once) is counted
from those files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta

import durafka
from durafka import OrchestrationContext
from tests.entities.apps import (
    Account,
    Counter,
    SignalMany,
    Transfer,
    account,
    audit,
    counter,
    signal_many,
    transfer,
)

__all__ = [
    "APPROVAL_EVENT",
    "MARKER_DIR_ENV",
    "Approval",
    "LoopState",
    "SignalMany",
    "TimeoutLoopState",
    "Transfer",
    "Work",
    "account",
    "app",
    "counter",
]

app = durafka.App()  # settings from DURAFKA_* in the role processes

#: The environment variable naming the directory of the activity execution markers.
MARKER_DIR_ENV = "DURAFKA_SOAK_MARKER_DIR"

#: The external event the ``approval`` orchestration waits for.
APPROVAL_EVENT = "approval"


@dataclass
class Work:
    """One activity call: ``tag`` identifies the call, ``value`` is what it works on."""

    tag: str
    value: int
    sleep_ms: int = 0


def _mark(tag: str) -> None:
    """Append ``tag`` to this process's marker file (one line per execution)."""
    directory = os.environ.get(MARKER_DIR_ENV)
    if not directory:
        return
    # One write of one short line with O_APPEND: a kill -9 cannot tear it in two.
    fd = os.open(
        os.path.join(directory, f"{os.getpid()}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)


# -- activities ------------------------------------------------------------------------


@app.activity
def greet(w: Work) -> str:
    _mark(w.tag)
    return f"Hello, {w.value}!"


@app.activity
def add_one(w: Work) -> int:
    _mark(w.tag)
    return w.value + 1


@app.activity
async def double(w: Work) -> int:
    _mark(w.tag)
    return w.value * 2


@app.activity
def slow_echo(w: Work) -> str:
    """Returns its own tag after ``sleep_ms``: a result delivered to the wrong call shows."""
    time.sleep(w.sleep_ms / 1000)
    _mark(w.tag)
    return w.tag


# -- entities (the entity tests' counter and bank account) -----------------------------------

app.entity(Counter)
app.entity(Account)


# -- orchestrations ------------------------------------------------------------------------


@app.orchestration
async def hello(ctx: OrchestrationContext, n: int) -> str:
    return await ctx.call_activity(greet, Work(f"{ctx.instance_id}/0", n))


@app.orchestration
async def sequence(ctx: OrchestrationContext, start: int) -> int:
    x = start
    for step in range(5):
        x = await ctx.call_activity(add_one, Work(f"{ctx.instance_id}/{step}", x))
    return x


@app.orchestration
async def fan_out(ctx: OrchestrationContext, n: int) -> int:
    calls = [ctx.call_activity(double, Work(f"{ctx.instance_id}/{i}", i)) for i in range(n)]
    return sum(await ctx.when_all(calls))


@app.orchestration
async def timer(ctx: OrchestrationContext, delay_ms: int) -> int:
    await ctx.sleep(timedelta(milliseconds=delay_ms))
    return await ctx.call_activity(add_one, Work(f"{ctx.instance_id}/0", delay_ms))


@dataclass
class Approval:
    """Wait up to ``timeout_ms`` for the approval event."""

    timeout_ms: int


@app.orchestration
async def approval(ctx: OrchestrationContext, a: Approval) -> str:
    try:
        data = await ctx.wait_for_external_event(
            APPROVAL_EVENT, timeout=timedelta(milliseconds=a.timeout_ms)
        )
    except durafka.EventTimeoutError:
        return "timed out"
    greeting = await ctx.call_activity(greet, Work(f"{ctx.instance_id}/0", int(data)))
    return f"approved {greeting}"


@app.orchestration
async def parent(ctx: OrchestrationContext, k: int) -> dict[str, object]:
    """``k`` sequence children and one hello child, all with ids derived from the parent's."""
    iid = ctx.instance_id
    children = [
        ctx.call_sub_orchestrator(sequence, 10 * i, instance_id=f"{iid}.c{i}") for i in range(k)
    ]
    greeting = ctx.call_sub_orchestrator(hello, k, instance_id=f"{iid}.h")
    results = await ctx.when_all(children)
    return {"sum": sum(results), "hello": await greeting}


@dataclass
class LoopState:
    """A ``continue_as_new`` loop: ``left`` generations to go, ``total`` so far."""

    left: int
    total: int = 0


@app.orchestration
async def loop(ctx: OrchestrationContext, s: LoopState) -> int:
    if s.left == 0:
        return s.total
    value = await ctx.call_activity(double, Work(f"{ctx.instance_id}/g{s.left}", s.left))
    if s.left % 3 == 0:
        # A durable timer in some generations: timers and new generations interleave.
        await ctx.sleep(timedelta(milliseconds=50))
    ctx.continue_as_new(LoopState(s.left - 1, s.total + value))


@dataclass
class TimeoutLoopState:
    """A loop of generations that each call ``slow_echo``; results must not cross generations.

    Generations with an even ``left`` give up on their call after ``short_timeout_ms``
    (shorter than ``sleep_ms``); the next generation (odd ``left``) waits up to
    ``long_timeout_ms`` for its own call, so the late result of the previous one
    arrives while it waits, with the same sequence id.
    """

    left: int
    sleep_ms: int
    short_timeout_ms: int
    long_timeout_ms: int
    mismatches: list[str] = field(default_factory=list)


@app.orchestration
async def timeout_loop(ctx: OrchestrationContext, s: TimeoutLoopState) -> list[str]:
    """Ends with every result that reached a generation it was not called by (none)."""
    if s.left == 0:
        return s.mismatches
    tag = f"{ctx.instance_id}/g{s.left}"
    timeout = s.short_timeout_ms if s.left % 2 == 0 else s.long_timeout_ms
    try:
        got = await ctx.call_activity(
            slow_echo,
            Work(tag, s.left, sleep_ms=s.sleep_ms),
            timeout=timedelta(milliseconds=timeout),
        )
    except durafka.ActivityTimeoutError:
        got = tag
    mismatches = s.mismatches if got == tag else [*s.mismatches, f"g{s.left} got {got}"]
    ctx.continue_as_new(replace(s, left=s.left - 1, mismatches=mismatches))


# The entity tests' orchestrations: signals to a counter, locked transfers, audits.
app.orchestration(signal_many)
app.orchestration(transfer)
app.orchestration(audit)
