"""The functions the observability tests run (importable by the role subprocesses)."""

from __future__ import annotations

import threading
from datetime import timedelta

import durafka
from durafka import OrchestrationContext, RetryPolicy

app = durafka.App()  # settings from DURAFKA_* (subprocesses) or overridden by tests

#: Attempts of ``flaky`` per instance: every one fails.
FLAKY_ATTEMPTS = 3

#: Set by a test to let ``blocks`` return; while clear, its step blocks the processor.
release = threading.Event()


@app.activity
def greet(name: str) -> str:
    """Returns a greeting."""
    return f"Hello, {name}!"


@app.activity
def flaky(n: int) -> int:
    """Always fails."""
    raise ValueError(f"flaky {n} failed")


@app.orchestration
async def greeting(ctx: OrchestrationContext, name: str) -> str:
    """One activity."""
    return await ctx.call_activity(greet, name)


@app.orchestration
async def retrying(ctx: OrchestrationContext, n: int) -> int:
    """An activity that fails every attempt of its retry policy: the instance fails."""
    policy = RetryPolicy(max_attempts=FLAKY_ATTEMPTS, first_interval=timedelta(milliseconds=20))
    return await ctx.call_activity(flaky, n, retry=policy)


@app.orchestration
async def napping(ctx: OrchestrationContext, ms: int) -> str:
    """A durable timer."""
    await ctx.sleep(timedelta(milliseconds=ms))
    return "rested"


@app.orchestration
async def waits_for_event(ctx: OrchestrationContext) -> str:
    """Waits for the event ``go`` (terminated by the tests)."""
    return str(await ctx.wait_for_external_event("go"))


@app.orchestration
async def blocks(ctx: OrchestrationContext) -> str:
    """A bug: blocking code in an orchestrator holds the processor's loop until released."""
    release.wait(60)
    return "released"


@app.entity
class Tally(durafka.Entity[int]):
    """A counter."""

    def add(self, amount: int) -> None:
        """Add ``amount``."""
        self.state += amount

    def fail(self) -> None:
        """An operation that fails."""
        raise RuntimeError("no")
