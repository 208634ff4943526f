"""Orchestrations, activities and an entity for the management, API and dashboard tests."""

from __future__ import annotations

from dataclasses import dataclass

import durafka
from durafka import OrchestrationContext

app = durafka.App()  # settings from DURAFKA_* or replaced by tests


@dataclass
class Order:
    """A typed input: a management start must match it before anything is written."""

    item: str
    quantity: int


@app.activity
def greet(name: str) -> str:
    """Says hello."""
    return f"Hello, {name}!"


@app.activity
def explode(message: str) -> None:
    """Always fails (the failure and traceback show on the instance)."""
    raise ValueError(message)


@app.orchestration
async def hello(ctx: OrchestrationContext, name: str) -> str:
    """One activity."""
    return await ctx.call_activity(greet, name)


@app.orchestration
async def approval(ctx: OrchestrationContext, order: Order) -> dict[str, object]:
    """Waits for the event ``approve`` and returns its data with the order."""
    ctx.set_custom_status({"waiting_for": "approve"})
    decision = await ctx.wait_for_external_event("approve")
    greeting = await ctx.call_activity(greet, order.item)
    return {"item": order.item, "decision": decision, "greeting": greeting}


@app.orchestration
async def failing(ctx: OrchestrationContext, message: str) -> None:
    """Fails through its activity."""
    await ctx.call_activity(explode, message)


@app.orchestration
async def parent(ctx: OrchestrationContext, name: str) -> str:
    """Runs ``hello`` as a child."""
    return await ctx.call_sub_orchestrator(hello, name, instance_id=f"{ctx.instance_id}-child")


@app.entity
class Counter(durafka.Entity[int]):
    """A counter."""

    def add(self, amount: int) -> None:
        self.state += amount
