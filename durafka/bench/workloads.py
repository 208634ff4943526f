"""The benchmark's app: the orchestrations and activities of workloads W1-W4.

Role processes load it as ``durafka.bench.workloads:app`` (settings from
``DURAFKA_*``); the benchmark itself builds an :class:`~durafka.App` with its
run's settings and this app's registry.
"""

from __future__ import annotations

import durafka
from durafka import OrchestrationContext

__all__ = [
    "SEQUENCE_STEPS",
    "Counter",
    "app",
    "counter_id",
    "expected_count",
    "expected_fan_out",
    "expected_hello",
    "expected_sequence",
]

#: Activities per W2 orchestration.
SEQUENCE_STEPS = 5

app = durafka.App()


@app.activity
def say_hello(name: str) -> str:
    """W1's activity."""
    return f"Hello, {name}!"


@app.orchestration
async def hello(ctx: OrchestrationContext, name: str) -> str:
    """W1: one activity."""
    return await ctx.call_activity(say_hello, name)


@app.activity
def add_one(x: int) -> int:
    """W2's activity."""
    return x + 1


@app.orchestration
async def sequence(ctx: OrchestrationContext, start: int) -> int:
    """W2: ``SEQUENCE_STEPS`` activities in a row, each adding one."""
    x = start
    for _ in range(SEQUENCE_STEPS):
        x = await ctx.call_activity(add_one, x)
    return x


@app.activity
def fan_out_item(i: int) -> int:
    """W3's activity: returns its input."""
    return i


@app.orchestration
async def fan_out(ctx: OrchestrationContext, m: int) -> int:
    """W3: ``m`` activities at once, summed."""
    results = await ctx.when_all([ctx.call_activity(fan_out_item, i) for i in range(m)])
    return sum(results)


@app.entity
class Counter(durafka.Entity[int]):
    """W4's entity: a counter."""

    def add(self, amount: int) -> None:
        """Add ``amount`` to the count."""
        self.state += amount


def expected_hello(name: str) -> str:
    """The output W1 must produce for ``name``."""
    return f"Hello, {name}!"


def expected_sequence(start: int) -> int:
    """The output W2 must produce for ``start``."""
    return start + SEQUENCE_STEPS


def expected_fan_out(m: int) -> int:
    """The output W3 must produce for ``m``: ``0 + 1 + ... + (m - 1)``."""
    return m * (m - 1) // 2


def counter_id(k: int) -> durafka.EntityId:
    """The id of W4's counter number ``k``."""
    return durafka.EntityId("Counter", f"c{k}")


def expected_count(k: int, counters: int, signals: int) -> int:
    """What counter ``k`` must reach when signal ``i`` adds one to counter ``i % counters``."""
    return signals // counters + (1 if k < signals % counters else 0)
