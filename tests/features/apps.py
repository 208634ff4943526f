"""Orchestrations and activities of the feature tests (importable by subprocesses).

Activities that must count their executions across processes (retries, late
results, at-least-once) append a line to a file in a directory named by their
input, so the tests can read the counts whichever process ran them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import durafka
from durafka import OrchestrationContext, RetryPolicy
from durafka.errors import ActivityFailed, ActivityTimeoutError, SubOrchestrationFailed

app = durafka.App()  # settings from DURAFKA_* (subprocesses) or replaced by tests


class TransientError(Exception):
    """A failure worth retrying."""


class PermanentError(Exception):
    """A failure a retry policy names as non-retryable."""


def _count_run(directory: str, key: str) -> int:
    """Append one line to ``<directory>/<key>.runs``; the number of runs so far."""
    path = Path(directory) / f"{key}.runs"
    with path.open("a") as f:
        f.write("run\n")
    return len(path.read_text().splitlines())


def runs(directory: Path, key: str) -> int:
    """How often the activity counted under ``key`` ran (0 if never)."""
    path = directory / f"{key}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


# -- activities --------------------------------------------------------------------------


@dataclass
class Flaky:
    """Input of :func:`flaky`: fail the first ``fail_times`` runs counted under ``key``."""

    directory: str
    key: str
    fail_times: int


@app.activity
def flaky(req: Flaky) -> int:
    """Fails with ``TransientError`` until it has run more than ``fail_times`` times."""
    n = _count_run(req.directory, req.key)
    if n <= req.fail_times:
        raise TransientError(f"run {n} of {req.key} fails on purpose")
    return n


@app.activity
def permanent_failure(req: Flaky) -> int:
    """Always fails with a non-retryable error (and counts its runs)."""
    n = _count_run(req.directory, req.key)
    raise PermanentError(f"run {n} of {req.key}: this will never work")


@dataclass
class Slow:
    """Input of :func:`slow`."""

    directory: str
    key: str
    seconds: float


@app.activity
def slow(req: Slow) -> str:
    """Sleeps, then records that it finished (its result arrives late)."""
    time.sleep(req.seconds)
    _count_run(req.directory, req.key)
    return "late result"


@app.activity
def square(x: int) -> int:
    return x * x


@app.activity
def record(value: Any) -> Any:
    """Returns its input: its TASK_SCHEDULED event keeps the value in history."""
    return value


# -- timers ------------------------------------------------------------------------------


@app.orchestration
async def sleeper(ctx: OrchestrationContext, seconds: float) -> float:
    """Sleeps durably; returns the elapsed time as the orchestration saw it (``ctx.now()``)."""
    started = ctx.now()
    await ctx.sleep(timedelta(seconds=seconds))
    return (ctx.now() - started).total_seconds()


# -- external events ---------------------------------------------------------------------


@app.orchestration
async def gather_items(ctx: OrchestrationContext, n: int) -> list[Any]:
    """Waits for ``go``, then takes ``n`` ``item`` events (raised before or after ``go``)."""
    await ctx.wait_for_external_event("go")
    return [await ctx.wait_for_external_event("item") for _ in range(n)]


@app.orchestration
async def wait_for(ctx: OrchestrationContext, event: str) -> Any:
    """Returns the data of the first event named ``event``."""
    return await ctx.wait_for_external_event(event)


@app.orchestration
async def approve_or_time_out(ctx: OrchestrationContext, timeout_seconds: float) -> str:
    """The timeout pattern: an event races a timer; the losing timer is cancelled.

    After an approval the orchestration sleeps past the cancelled timer's due
    time, so a late firing of that timer would reach a running instance.
    """
    approval = ctx.wait_for_external_event("approve")
    timeout = ctx.create_timer(timedelta(seconds=timeout_seconds))
    winner = await ctx.when_any([approval, timeout])
    if winner is timeout:
        return "timed out"
    timeout.cancel()
    await ctx.sleep(timedelta(seconds=timeout_seconds * 2))
    return f"approved by {approval.result()}"


@app.orchestration
async def approve_within_a_day(ctx: OrchestrationContext) -> str:
    """The timeout pattern with a long timeout: an approval ends it, the day-long timer pends."""
    approval = ctx.wait_for_external_event("approve")
    await ctx.when_any([approval, ctx.create_timer(timedelta(days=1))])
    return f"approved by {approval.result()}"


# -- sub-orchestrations ------------------------------------------------------------------


@app.orchestration
async def square_child(ctx: OrchestrationContext, x: int) -> int:
    """A child that squares ``x`` with an activity, or fails for a negative ``x``."""
    if x < 0:
        raise ValueError(f"cannot square a negative number: {x}")
    return await ctx.call_activity(square, x)


@app.orchestration
async def parent_of_squares(ctx: OrchestrationContext, n: int) -> dict[str, Any]:
    """Fans out to ``n`` children, then catches the failure of a bad one."""
    results = await ctx.when_all([ctx.call_sub_orchestrator(square_child, i) for i in range(n)])
    try:
        await ctx.call_sub_orchestrator(square_child, -1, instance_id=f"{ctx.instance_id}-bad")
        caught = ""
    except SubOrchestrationFailed as exc:
        caught = f"{exc.details.error_type}: {exc.details.message}"
    return {"results": results, "caught": caught}


@app.orchestration
async def parent_of_waiters(ctx: OrchestrationContext, n: int) -> list[Any]:
    """Starts ``n`` children that wait for an event nobody raises."""
    return await ctx.when_all(
        [
            ctx.call_sub_orchestrator(wait_for, "never", instance_id=f"{ctx.instance_id}-c{i}")
            for i in range(n)
        ]
    )


# -- retries and timeouts ----------------------------------------------------------------


@dataclass
class RetryInput:
    """Input of :func:`retrying`."""

    flaky: Flaky
    max_attempts: int
    interval_seconds: float
    total_timeout_seconds: float | None = None


@app.orchestration
async def retrying(ctx: OrchestrationContext, inp: RetryInput) -> str:
    """Calls :func:`flaky` under a retry policy; reports the run that succeeded or the failure."""
    policy = RetryPolicy(
        max_attempts=inp.max_attempts,
        first_interval=timedelta(seconds=inp.interval_seconds),
        backoff_coefficient=1.0,
        max_interval=timedelta(days=1),
        total_timeout=(
            None
            if inp.total_timeout_seconds is None
            else timedelta(seconds=inp.total_timeout_seconds)
        ),
    )
    try:
        return f"succeeded on run {await ctx.call_activity(flaky, inp.flaky, retry=policy)}"
    except ActivityFailed as exc:
        return f"gave up: {exc.details.message}"


@app.orchestration
async def not_retried(ctx: OrchestrationContext, req: Flaky) -> str:
    """A non-retryable error type ends the retries at once."""
    policy = RetryPolicy(
        max_attempts=5,
        first_interval=timedelta(milliseconds=50),
        non_retryable_errors=(PermanentError,),
    )
    try:
        await ctx.call_activity(permanent_failure, req, retry=policy)
    except ActivityFailed as exc:
        return exc.details.error_type.rsplit(".", 1)[-1]
    return "unexpected success"


@app.orchestration
async def flaky_child(ctx: OrchestrationContext, req: Flaky) -> int:
    """A child that fails whenever its one activity call fails (no retry of its own)."""
    return await ctx.call_activity(flaky, req)


@app.orchestration
async def retries_child(ctx: OrchestrationContext, req: Flaky) -> str:
    """Retries a failing sub-orchestration: each attempt is a new child instance."""
    policy = RetryPolicy(max_attempts=4, first_interval=timedelta(milliseconds=100))
    return (
        f"child succeeded on run {await ctx.call_sub_orchestrator(flaky_child, req, retry=policy)}"
    )


@dataclass
class TimeoutInput:
    """Input of :func:`times_out`."""

    slow: Slow
    timeout_seconds: float
    linger_seconds: float


@app.orchestration
async def times_out(ctx: OrchestrationContext, inp: TimeoutInput) -> str:
    """A slow activity under a timeout; then lingers so its late result arrives meanwhile."""
    try:
        outcome = await ctx.call_activity(
            slow, inp.slow, timeout=timedelta(seconds=inp.timeout_seconds)
        )
    except ActivityTimeoutError as exc:
        outcome = f"timed out: {type(exc).__name__}"
    await ctx.sleep(timedelta(seconds=inp.linger_seconds))
    return outcome


# -- heartbeats ---------------------------------------------------------------------------


@dataclass
class Beating:
    """Input of :func:`beating`: runs up to ``hang_runs`` hang (no heartbeat), later ones beat."""

    directory: str
    key: str
    seconds: float
    hang_runs: int = 0
    hang_seconds: float = 5.0


@app.activity
def beating(ctx: durafka.ActivityContext, req: Beating) -> str:
    """Works for ``seconds``, heartbeating every 0.1 s, unless this run is one that hangs."""
    n = _count_run(req.directory, req.key)
    if n <= req.hang_runs:
        time.sleep(req.hang_seconds)  # stuck in a call that never heartbeats
        return f"hung run {n} came back"
    deadline = time.monotonic() + req.seconds
    beats = 0
    while time.monotonic() < deadline:
        beats += 1
        ctx.heartbeat({"beat": beats})
        time.sleep(0.1)
    return f"run {n} beat"


@dataclass
class HeartbeatCall:
    """Input of :func:`calls_with_heartbeats`."""

    beating: Beating
    heartbeat_timeout_seconds: float
    max_attempts: int = 1


@app.orchestration
async def calls_with_heartbeats(ctx: OrchestrationContext, req: HeartbeatCall) -> str:
    """Calls :func:`beating` with a heartbeat timeout (and a retry policy for more attempts)."""
    retry = (
        RetryPolicy(max_attempts=req.max_attempts, first_interval=timedelta(milliseconds=100))
        if req.max_attempts > 1
        else None
    )
    try:
        return await ctx.call_activity(
            beating,
            req.beating,
            retry=retry,
            heartbeat_timeout=timedelta(seconds=req.heartbeat_timeout_seconds),
        )
    except ActivityTimeoutError as exc:
        return f"{type(exc).__name__}: {exc.details.message}"


# -- continue_as_new ---------------------------------------------------------------------


@dataclass
class Counter:
    """State of :func:`counter`, one generation per increment."""

    n: int
    until: int
    with_activity: bool = False


@app.orchestration
async def counter(ctx: OrchestrationContext, state: Counter) -> int:
    """An eternal counter: one ``continue_as_new`` per increment until ``until``."""
    if state.with_activity:
        await ctx.call_activity(record, state.n)  # one await per generation
    if state.n >= state.until:
        return state.n
    ctx.continue_as_new(Counter(state.n + 1, state.until, state.with_activity))


@app.orchestration
async def ticking(ctx: OrchestrationContext, state: dict[str, Any]) -> dict[str, Any]:
    """Each generation races a ``tick`` event against a timer, then continues as new.

    ``state["timeouts_minutes"][g]`` is generation ``g``'s timer. The cancelled
    timer of a generation is still stored when the next one, whose sequence
    ids start at 0 again, waits on a timer of its own.
    """
    g = state["generation"]
    tick = ctx.wait_for_external_event("tick")
    timeout = ctx.create_timer(timedelta(minutes=state["timeouts_minutes"][g]))
    winner = await ctx.when_any([tick, timeout])
    if winner is timeout:
        return {"timed_out_in": g}
    timeout.cancel()
    if g + 1 == len(state["timeouts_minutes"]):
        return {"ticked": g + 1}
    ctx.continue_as_new({**state, "generation": g + 1})


@app.orchestration
async def carry_over(ctx: OrchestrationContext, state: dict[str, Any]) -> list[Any]:
    """Generation 0 continues as new on ``go``; generation 1 takes the ``item``s left over.

    ``state["keep"]`` is passed as ``keep_unprocessed_events``; generation 1
    stops at the first half second without an item.
    """
    if state["generation"] == 0:
        await ctx.wait_for_external_event("go")
        ctx.continue_as_new({**state, "generation": 1}, keep_unprocessed_events=state["keep"])
    items: list[Any] = []
    while True:
        item = ctx.wait_for_external_event("item")
        pause = ctx.create_timer(timedelta(seconds=0.5))
        if await ctx.when_any([item, pause]) is pause:
            return items
        pause.cancel()
        items.append(item.result())


# -- custom status, determinism ----------------------------------------------------------


@app.orchestration
async def progress(ctx: OrchestrationContext, steps: int) -> str:
    """Publishes its progress as custom status, one step per ``next`` event."""
    for i in range(steps):
        ctx.set_custom_status({"step": i, "of": steps})
        await ctx.wait_for_external_event("next")
    ctx.set_custom_status({"step": steps, "of": steps, "done": True})
    return "done"


@app.orchestration
async def deterministic(ctx: OrchestrationContext, steps: int) -> list[dict[str, Any]]:
    """Draws uuids, random numbers and times; records each in history through an activity.

    Run with ``cache_size=0``, every step replays the earlier ones, so the
    output (computed on the last replay) equals the recorded values only if
    the helpers are deterministic. The replay-safe logger logs each step once.
    """
    seen: list[dict[str, Any]] = []
    for i in range(steps):
        value = {
            "uuid": str(ctx.new_uuid()),
            "random": ctx.random().random(),
            "now": ctx.now().isoformat(),
        }
        ctx.logger.info("deterministic step %d", i)
        await ctx.call_activity(record, value)
        seen.append(value)
        await ctx.wait_for_external_event("next")
    return seen


# -- executions (issue 10, holes 2 and 8) ---------------------------------------------


@dataclass
class Echo:
    """Input of :func:`slow_echo`: return ``value`` after ``seconds``."""

    value: str
    seconds: float


@app.activity
def slow_echo(req: Echo) -> str:
    """Returns its value after a delay (late results of earlier executions)."""
    time.sleep(req.seconds)
    return req.value


@app.orchestration
async def generations_of_one_call(ctx: OrchestrationContext, generation: int) -> str:
    """Generation 0 gives up on a slow call and continues as new; generation 1 makes
    the same call (same sequence id) and must get its own result, not the late one."""
    if generation == 0:
        try:
            await ctx.call_activity(
                slow_echo, Echo("generation 0", 0.6), timeout=timedelta(milliseconds=200)
            )
        except ActivityTimeoutError:
            ctx.continue_as_new(1)
    return str(await ctx.call_activity(slow_echo, Echo(f"generation {generation}", 1.2)))


@app.orchestration
async def echo_once(ctx: OrchestrationContext, req: Echo) -> str:
    """One slow call; its result is the output."""
    return str(await ctx.call_activity(slow_echo, req))


@app.orchestration
async def slow_child(ctx: OrchestrationContext, req: Echo) -> str:
    """A sub-orchestration that takes ``req.seconds``."""
    return str(await ctx.call_activity(slow_echo, req))


@app.orchestration
async def parent_of_one_child(ctx: OrchestrationContext, req: Echo) -> str:
    """Calls :func:`slow_child` with the default child id."""
    return str(await ctx.call_sub_orchestrator(slow_child, req))


@app.orchestration
async def fails_or_not(ctx: OrchestrationContext, fail: bool) -> str:
    """Fails when asked to."""
    if fail:
        raise PermanentError("asked to fail")
    return "done"


@app.orchestration
async def calls_named_child(ctx: OrchestrationContext, child_id: str) -> str:
    """Calls :func:`slow_child` under a given instance id."""
    return str(await ctx.call_sub_orchestrator(slow_child, Echo("mine", 0.0), instance_id=child_id))
