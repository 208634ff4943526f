"""The approval sample: a decision within the timeout, or escalation after it.

The 72-hour timeout runs on the time-skipping test clock; on the real broker
the timeout is shortened through the input to a second.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import durafka
from durafka import RuntimeStatus
from durafka.client import Client
from durafka.runtime.history import EventKind
from durafka.testing import TestEnvironment
from examples import approval
from examples.approval import ApprovalOutcome, ApprovalRequest, Decision
from tests.examples.conftest import run_sample
from tests.features.helpers import wait_until_async
from tests.support.waiting import wait_until

OnKafka = Callable[[durafka.App], AbstractContextManager[Client]]


async def test_no_decision_in_72_hours_escalates() -> None:
    async with TestEnvironment(approval.app) as env:
        iid = await env.client.start_new(
            approval.approval_workflow, ApprovalRequest("r-1", "bob", 500.0)
        )
        result = await env.wait_for_completion(iid)
    assert result.outcome == "escalated"
    assert result.decided_by == "director@example.com"
    assert 72.0 <= result.waited_hours < 72.1  # the orchestration's clock, skipped ahead


async def test_decision_within_the_timeout_wins() -> None:
    async with TestEnvironment(approval.app, auto_skip=False) as env:
        iid = await env.client.start_new(
            approval.approval_workflow, ApprovalRequest("r-2", "bob", 50.0)
        )
        await wait_until_async(lambda: _asked(env, iid), what="the approval request")
        await env.client.raise_event(iid, "decision", Decision(False, "ada", "too expensive"))
        result = await env.wait_for_completion(iid)
    assert result == ApprovalOutcome("rejected", "ada", result.waited_hours)
    assert result.waited_hours < 1


async def _asked(env: TestEnvironment, iid: str) -> bool:
    status = await env.client.get_status(iid)
    return status is not None and status.custom_status is not None


def test_escalation_and_approval_on_the_real_broker(on_kafka: OnKafka) -> None:
    with on_kafka(approval.app) as client:
        timeout_hours = 1.0 / 3600  # one second
        late = client.start_new(
            approval.approval_workflow, ApprovalRequest("r-3", "eve", 9.0, timeout_hours)
        )
        quick = client.start_new(
            approval.approval_workflow, ApprovalRequest("r-4", "eve", 9.0, timeout_hours=1.0)
        )
        wait_until(
            lambda: (s := client.get_status(quick)) is not None and s.custom_status is not None,
            timeout=60,
        )
        client.raise_event(quick, "decision", {"approved": True, "approver": "ada"})

        escalated = client.wait_for_completion(late, timeout=60)
        assert escalated.outcome == "escalated"
        assert escalated.waited_hours * 3600 >= 1.0
        approved = client.wait_for_completion(quick, timeout=60)
        assert approved.outcome == "approved" and approved.decided_by == "ada"
        # The decision won: the timer was created and never fired into the orchestration.
        kinds = [e.kind for e in client.get_history(quick)]
        assert EventKind.TIMER_CREATED in kinds and EventKind.TIMER_FIRED not in kinds
        status = client.get_status(quick)
        assert status is not None and status.runtime_status is RuntimeStatus.COMPLETED


def test_sample_runs_on_memory() -> None:
    assert run_sample("examples.approval").splitlines() == [
        "r-1: approved by ada",
        "r-2: escalated by director@example.com",
    ]
