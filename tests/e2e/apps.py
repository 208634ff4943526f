"""Orchestrations and activities shared by the end-to-end tests (importable by subprocesses)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import durafka
from durafka import OrchestrationContext

app = durafka.App()  # settings from DURAFKA_* (subprocesses) or overridden by tests


@dataclass
class Order:
    """A typed input, to check dataclass payloads end to end."""

    item: str
    quantity: int


class PaymentDeclined(Exception):
    """A business error raised by an activity."""


@app.activity
def say_hello(name: str) -> str:
    return f"Hello, {name}!"


@app.activity
def add_one(x: int) -> int:
    return x + 1


@app.activity
async def double(x: int) -> int:
    return x * 2


@app.activity
def charge(order: Order) -> str:
    if order.quantity <= 0:
        raise PaymentDeclined(f"cannot charge {order.quantity} x {order.item}")
    return f"charged {order.quantity} x {order.item}"


@app.activity
def crash_marker(x: int) -> int:
    """Counts executions in a file when DURAFKA_TEST_MARKER_DIR is set (at-least-once checks)."""
    marker_dir = os.environ.get("DURAFKA_TEST_MARKER_DIR")
    if marker_dir:
        with open(os.path.join(marker_dir, f"{os.getpid()}.log"), "a") as f:
            f.write(f"{x}\n")
    return x


@app.activity
def takes_its_worker_down(x: int) -> int:
    """Kills the process that runs it at once, as a segfault or the OOM killer would."""
    os._exit(3)


@app.orchestration
async def survives_a_poison_activity(ctx: OrchestrationContext, n: int) -> dict[str, object]:
    """Runs ``n`` innocent activities beside one that takes its worker down."""
    innocent = [ctx.call_activity(add_one, i) for i in range(n)]
    retry = durafka.RetryPolicy(max_attempts=3, first_interval=timedelta(milliseconds=100))
    try:
        await ctx.call_activity(takes_its_worker_down, 0, retry=retry)
        poison = "completed"
    except durafka.ActivityFailed as exc:
        poison = f"{exc.details.error_type}: {exc.details.message}"
    return {"poison": poison, "innocent": sum(await ctx.when_all(innocent))}


@app.orchestration
async def hello_world(ctx: OrchestrationContext, name: str) -> str:
    return await ctx.call_activity(say_hello, name)


@app.orchestration
async def sequence(ctx: OrchestrationContext, start: int) -> int:
    x = start
    for _ in range(5):
        x = await ctx.call_activity(add_one, x)
    return x


@app.orchestration
async def fan_out(ctx: OrchestrationContext, n: int) -> int:
    results = await ctx.when_all([ctx.call_activity(double, i) for i in range(n)])
    return sum(results)


@app.orchestration
async def checkout(ctx: OrchestrationContext, order: Order) -> str:
    try:
        return await ctx.call_activity(charge, order)
    except durafka.ActivityFailed as exc:
        ctx.set_custom_status({"declined": exc.details.message})
        return f"declined: {exc.details.error_type.rsplit('.', 1)[-1]}"


@app.orchestration
async def checkout_uncaught(ctx: OrchestrationContext, order: Order) -> str:
    return await ctx.call_activity(charge, order)


@app.orchestration
async def calls_unknown_activity(ctx: OrchestrationContext) -> str:
    return await ctx.call_activity("no_such_activity", 1)


@app.orchestration
async def crash_workload(ctx: OrchestrationContext, x: int) -> int:
    a = await ctx.call_activity(crash_marker, x)
    b = await ctx.call_activity(add_one, a)
    return b


@app.orchestration
async def waits_forever(ctx: OrchestrationContext) -> str:
    return await ctx.wait_for_external_event("never")


#: Flipped by the non-determinism test to simulate a code change between steps.
CHANGED_CODE = {"enabled": False}


@app.orchestration
async def changes_between_steps(ctx: OrchestrationContext) -> str:
    if CHANGED_CODE["enabled"]:
        first = await ctx.call_activity(add_one, 1)  # the "new" code calls another activity
    else:
        first = await ctx.call_activity(say_hello, "v1")
    await ctx.wait_for_external_event("go")
    return str(first)


#: Executions of ``counted`` per input, in this process (run-once checks).
EXECUTIONS: Counter[str] = Counter()
_EXECUTIONS_LOCK = threading.Lock()


@app.activity
def counted(name: str) -> str:
    with _EXECUTIONS_LOCK:
        EXECUTIONS[name] += 1
    return name


@app.orchestration
async def runs_counted(ctx: OrchestrationContext, name: str) -> str:
    return await ctx.call_activity(counted, name)


@app.orchestration
async def greets_after_event(ctx: OrchestrationContext, name: str) -> str:
    first = await ctx.call_activity(say_hello, name)
    ctx.set_custom_status("waiting")
    suffix = await ctx.wait_for_external_event("go")
    return f"{first} {suffix}"


@app.orchestration
async def naps(ctx: OrchestrationContext, ms: int) -> str:
    await ctx.create_timer(timedelta(milliseconds=ms))
    return "rested"
