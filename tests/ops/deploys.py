"""One order saga in three deploys: the running code, a compatible and an incompatible change.

``durafka replay-check`` is run with each change against instances the running
code left waiting (``tests/ops/test_replay_check.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import durafka
from durafka import OrchestrationContext


def reserve(order: str) -> str:
    """Reserves the stock."""
    return f"reserved {order}"


def charge(order: str) -> str:
    """Charges the card."""
    return f"charged {order}"


def ship(order: str) -> str:
    """Ships the parcel."""
    return f"shipped {order}"


def notify(order: str) -> str:
    """Tells the customer (the change's new step)."""
    return f"notified {order}"


def _app(*activities: Callable[..., Any]) -> durafka.App:
    app = durafka.App()
    for fn in activities:
        app.activity(fn)
    return app


#: The code the instances run: reserve, wait for approval, charge, ship.
running = _app(reserve, charge, ship)


@running.orchestration(name="saga")
async def saga_v1(ctx: OrchestrationContext, order: str) -> list[str]:
    done = [await ctx.call_activity("reserve", order)]
    ctx.set_custom_status("waiting")
    await ctx.wait_for_external_event("approve")
    done.append(await ctx.call_activity("charge", order))
    done.append(await ctx.call_activity("ship", order))
    return done


#: A compatible change: a new step behind ``ctx.patched``.
compatible = _app(reserve, charge, ship, notify)


@compatible.orchestration(name="saga")
async def saga_patched(ctx: OrchestrationContext, order: str) -> list[str]:
    done = [await ctx.call_activity("reserve", order)]
    ctx.set_custom_status("waiting")
    await ctx.wait_for_external_event("approve")
    if ctx.patched("notify"):
        done.append(await ctx.call_activity("notify", order))
    done.append(await ctx.call_activity("charge", order))
    done.append(await ctx.call_activity("ship", order))
    return done


#: An incompatible change: charging before reserving.
incompatible = _app(reserve, charge, ship)


@incompatible.orchestration(name="saga")
async def saga_reordered(ctx: OrchestrationContext, order: str) -> list[str]:
    done = [await ctx.call_activity("charge", order)]  # INCOMPATIBLE-LINE
    done.append(await ctx.call_activity("reserve", order))
    ctx.set_custom_status("waiting")
    await ctx.wait_for_external_event("approve")
    done.append(await ctx.call_activity("ship", order))
    return done
