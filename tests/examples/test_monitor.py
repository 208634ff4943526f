"""The monitor sample: polls on a timer with continue_as_new until the job is done."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager

import durafka
from durafka.client import Client
from durafka.runtime.history import EventKind
from durafka.testing import TestEnvironment
from examples import monitor
from examples.monitor import Watch
from tests.examples.conftest import run_sample

OnKafka = Callable[[durafka.App], AbstractContextManager[Client]]


def _job(checks: int) -> str:
    return f"job-{uuid.uuid4().hex[:8]}-{checks}"  # the fake service counts per job id


async def test_hourly_polls_for_two_days_run_in_a_moment() -> None:
    job = _job(48)
    async with TestEnvironment(monitor.app) as env:
        iid = await env.client.start_new(monitor.monitor_job, Watch(job, poll_seconds=3600))
        result = await env.wait_for_completion(iid)
        history = await env.client.get_history(iid)
    assert (result.status, result.polls) == ("done", 48)
    assert 47 * 3600 <= result.watched_seconds < 48 * 3600  # 47 sleeps between 48 checks
    # Only the last generation's history is left.
    assert [e.name for e in history if e.kind is EventKind.TASK_SCHEDULED] == [
        "check_job",
        "notify",
    ]


async def test_gives_up_after_max_polls() -> None:
    async with TestEnvironment(monitor.app) as env:
        iid = await env.client.start_new(
            monitor.monitor_job, Watch(_job(1000), poll_seconds=600, max_polls=5)
        )
        result = await env.wait_for_completion(iid)
    assert (result.status, result.polls) == ("gave up", 5)


def test_monitor_on_the_real_broker(on_kafka: OnKafka) -> None:
    with on_kafka(monitor.app) as client:
        iid = client.start_new(monitor.monitor_job, Watch(_job(4), poll_seconds=0.2))
        result = client.wait_for_completion(iid, timeout=60)
        assert (result.status, result.polls) == ("done", 4)
        assert result.watched_seconds >= 3 * 0.2 - 1e-9  # three sleeps (float sum)
        kinds = [e.kind for e in client.get_history(iid)]
        assert kinds.count(EventKind.EXECUTION_STARTED) == 1
        assert EventKind.TIMER_CREATED not in kinds  # the last generation did not sleep


def test_sample_runs_on_memory() -> None:
    assert run_sample("examples.monitor").splitlines() == ["nightly-build-5: done after 5 checks"]
