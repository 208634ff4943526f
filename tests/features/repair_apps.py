"""Orchestrations to repair: rewound after failures, reset to an earlier event.

Activities count their runs in files (``<directory>/<key>.runs``), and a step
fails while ``<directory>/<key>.broken`` exists, so a test breaks and mends
them from outside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import durafka
from durafka import OrchestrationContext

app = durafka.App()  # replaced by tests


@dataclass
class Step:
    """One counted step: fails while ``<directory>/<key>.broken`` exists."""

    directory: str
    key: str


def runs(directory: Path, key: str) -> int:
    """How often step ``key`` ran."""
    path = directory / f"{key}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


@app.activity
def step(s: Step) -> str:
    """Counts a run; fails while the step is broken."""
    with (Path(s.directory) / f"{s.key}.runs").open("a") as f:
        f.write("run\n")
    if (Path(s.directory) / f"{s.key}.broken").exists():
        raise RuntimeError(f"{s.key} is broken")
    hold = Path(s.directory) / f"{s.key}.hold"
    deadline = time.monotonic() + 120
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return s.key


@app.orchestration
async def child_saga(ctx: OrchestrationContext, directory: str) -> str:
    """A child with one step that can break."""
    return await ctx.call_activity(step, Step(directory, "child-step"))


@app.orchestration
async def saga(ctx: OrchestrationContext, directory: str) -> list[str]:
    """Reserve, charge (may break), then a child (may break), then a timer."""
    done = [await ctx.call_activity(step, Step(directory, "reserve"))]
    done.append(await ctx.call_activity(step, Step(directory, "charge")))
    done.append(await ctx.call_sub_orchestrator(child_saga, directory))
    await ctx.sleep(timedelta(milliseconds=50))
    return done


@app.orchestration
async def broken_code(ctx: OrchestrationContext, directory: str) -> None:
    """Fails in its own code after a step: nothing a rewind can retry."""
    await ctx.call_activity(step, Step(directory, "before-bug"))
    raise ValueError("a bug in the orchestrator")


@app.orchestration
async def two_events(ctx: OrchestrationContext, directory: str) -> list[str]:
    """One step, the event ``go``, a second step, the event ``finish``."""
    done = [await ctx.call_activity(step, Step(directory, "one"))]
    ctx.set_custom_status("waiting for go")
    await ctx.wait_for_external_event("go")
    done.append(await ctx.call_activity(step, Step(directory, "two")))
    ctx.set_custom_status("waiting for finish")
    done.append(await ctx.wait_for_external_event("finish"))
    return done


@app.orchestration
async def one_step(ctx: OrchestrationContext, directory: str) -> str:
    """One step that can break or be held."""
    return await ctx.call_activity(step, Step(directory, "charge"))


@app.orchestration
async def held_child(ctx: OrchestrationContext, directory: str) -> str:
    """A child that waits for the event ``release``."""
    return str(await ctx.wait_for_external_event("release"))


@app.orchestration
async def with_child(ctx: OrchestrationContext, directory: str) -> list[str]:
    """One step, then a child that waits (its id: ``<parent>-child``)."""
    done = [await ctx.call_activity(step, Step(directory, "first"))]
    done.append(
        await ctx.call_sub_orchestrator(
            held_child, directory, instance_id=f"{ctx.instance_id}-child"
        )
    )
    return done
