"""Changing a running order saga: a patch, then a new version, deployed mid-flight.

An instance started on the old code waits for an approval while the new code is
deployed (the old app stops, a new one starts on the same hub and state); it
must finish on the old branch, and a new instance must take the new one. Runs
on memory:// and on the real broker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import durafka
from durafka import OrchestrationContext
from durafka.registry import Registry


def check_fraud(order: str) -> str:
    return f"checked {order}"


def charge(order: str) -> str:
    return f"charged {order}"


async def order_v1(ctx: OrchestrationContext, order: str) -> list[str]:
    """The code instances are running: wait for approval, charge."""
    await ctx.wait_for_external_event("approve")
    return [str(await ctx.call_activity(charge, order))]


async def order_patched(ctx: OrchestrationContext, order: str) -> list[str]:
    """The change as a patch: a fraud check first, for executions that can take it."""
    done = []
    if ctx.patched("fraud-check"):
        done.append(str(await ctx.call_activity(check_fraud, order)))
    await ctx.wait_for_external_event("approve")
    done.append(str(await ctx.call_activity(charge, order)))
    return done


async def order_v2(ctx: OrchestrationContext, order: str) -> list[str]:
    """The change as a new version: approval and fraud check in the other order."""
    await ctx.wait_for_external_event("approve")
    checked = str(await ctx.call_activity(check_fraud, order))
    return [checked, str(await ctx.call_activity(charge, order))]


def registry(*orchestrations: tuple[Any, str | None]) -> Registry:
    reg = Registry()
    reg.add_activity(check_fraud)
    reg.add_activity(charge)
    for fn, version in orchestrations:
        reg.add_orchestration(fn, name="order", version=version)
    return reg


def deploy(app_factory: Callable[..., durafka.App], reg: Registry, first: str) -> list[Any]:
    """Run ``first`` on the v1 code, deploy ``reg``, start another; both outputs."""
    old_app = app_factory(registry=registry((order_v1, None)))
    with old_app.running(), old_app.sync_client() as client:
        client.start_new("order", "o-old", instance_id=first)
        client.status_view.wait_for(first, lambda s: s.runtime_status.value == "RUNNING", 30)
    new_app = app_factory(registry=reg)
    with new_app.running(), new_app.sync_client() as client:
        new = client.start_new("order", "o-new")
        client.status_view.wait_for(new, lambda s: s.runtime_status.value == "RUNNING", 30)
        client.raise_event(first, "approve")
        client.raise_event(new, "approve")
        return [
            client.wait_for_completion(first, timeout=60),
            client.wait_for_completion(new, timeout=60),
        ]


def test_a_patch_leaves_running_instances_on_the_old_branch(
    app_factory: Callable[..., durafka.App],
) -> None:
    old, new = deploy(app_factory, registry((order_patched, None)), "patched-old")
    assert old == ["charged o-old"]
    assert new == ["checked o-new", "charged o-new"]


def test_a_new_version_runs_new_instances_while_old_ones_keep_theirs(
    app_factory: Callable[..., durafka.App],
) -> None:
    reg = registry((order_v1, "1"), (order_v2, "2"))
    old, new = deploy(app_factory, reg, "versioned-old")
    assert old == ["charged o-old"]
    assert new == ["checked o-new", "charged o-new"]
