"""A monitor: an eternal orchestration that polls on a durable timer until a condition holds.

Every generation checks the job once; while it is still running, the
orchestration sleeps for the polling interval and continues as new, so its
history never grows however long it watches. It stops when the job is done
(or failed), or after ``max_polls`` checks.

Run it with ``python -m examples.monitor`` (embedded ``memory://``). The job
service here is simulated: a job id ending in ``-<n>`` is done on its n-th
status check. A real monitor's activity would call the real service.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import durafka
from durafka import OrchestrationContext

app = durafka.App("monitors")


class FakeJobService:
    """A stand-in for a remote job API: job ``<name>-<n>`` is done on its n-th check."""

    def __init__(self) -> None:
        self._checks: Counter[str] = Counter()
        self._lock = threading.Lock()

    def status(self, job_id: str) -> str:
        """``running`` or ``done``."""
        with self._lock:
            self._checks[job_id] += 1
            checks = self._checks[job_id]
        _, _, n = job_id.rpartition("-")
        return "done" if n.isdigit() and checks >= int(n) else "running"


JOBS = FakeJobService()


@dataclass
class Watch:
    """What to watch, and the monitor's state carried from one generation to the next.

    Attributes:
        job_id: the job to watch.
        poll_seconds: the wait between two checks.
        max_polls: give up after this many checks.
        polls: checks made so far (state).
        started_at: when the first generation ran, ISO 8601 (state).
    """

    job_id: str
    poll_seconds: float = 60.0
    max_polls: int = 1000
    polls: int = 0
    started_at: str | None = None


@dataclass
class WatchResult:
    """How the watch ended: the job's last status, the checks made, the time it took."""

    job_id: str
    status: str
    polls: int
    watched_seconds: float


@app.activity
def check_job(job_id: str) -> str:
    """Ask the job service for the job's status."""
    return JOBS.status(job_id)


@app.activity
def notify(message: str) -> str:
    """Tell someone (here: just return the message)."""
    return message


@app.orchestration
async def monitor_job(ctx: OrchestrationContext, watch: Watch) -> WatchResult:
    """Check the job; sleep and continue as new while it runs, finish when it does not."""
    started_at = watch.started_at or ctx.now().isoformat()
    status = await ctx.call_activity(check_job, watch.job_id)
    polls = watch.polls + 1
    watched = (ctx.now() - datetime.fromisoformat(started_at)).total_seconds()
    if status != "running":
        await ctx.call_activity(notify, f"job {watch.job_id} is {status} after {polls} checks")
        return WatchResult(watch.job_id, status, polls, watched)
    if polls >= watch.max_polls:
        return WatchResult(watch.job_id, "gave up", polls, watched)

    ctx.set_custom_status({"polls": polls, "last_status": status})
    await ctx.sleep(timedelta(seconds=watch.poll_seconds))
    # A fresh, empty history for the next check: the state travels in the input.
    ctx.continue_as_new(replace(watch, polls=polls, started_at=started_at))


async def main() -> None:
    """Watch a job that finishes on its 5th check, polling every 0.2 seconds."""
    async with app.run(), app.client() as client:
        iid = await client.start_new(monitor_job, Watch("nightly-build-5", poll_seconds=0.2))
        result = await client.wait_for_completion(iid, timeout=30)
        print(f"{result.job_id}: {result.status} after {result.polls} checks")


if __name__ == "__main__":
    asyncio.run(main())
