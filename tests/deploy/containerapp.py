"""The app the container test runs in the examples image (mounted at /app/containerapp.py).

Self-contained (the image has durafka, not the tests): its task hub comes from
``DURAFKA_TASK_HUB``, so every test run has a hub of its own.
"""

from __future__ import annotations

import durafka

app = durafka.App()


@app.activity
def reserve(order: str) -> str:
    """First step: a reservation id for the order."""
    return f"r-{order}"


@app.activity
def confirm(reservation: str) -> str:
    """Second step: the confirmation of a reservation."""
    return f"c-{reservation}"


@app.orchestration
async def order(ctx: durafka.OrchestrationContext, order_id: str) -> str:
    """Two activities in sequence: three transactions of the processor per instance."""
    reservation = await ctx.call_activity(reserve, order_id)
    return await ctx.call_activity(confirm, reservation)
