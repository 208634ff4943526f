"""Human interaction: wait for an approval, escalate if nobody decides within 72 hours.

The orchestration asks for approval, then races the ``decision`` event against
a durable timer. Whichever comes first wins; the loser is cancelled. Waiting
costs nothing while it lasts: the instance sleeps in the processor's store, and
survives restarts of every process.

Run it with ``python -m examples.approval`` (embedded ``memory://``): one request
is approved, one escalates after a timeout of a few seconds. The timeout is part
of the input (``timeout_hours``, 72 by default), so tests can shorten it, or keep
it and skip the clock (see ``tests/examples/test_approval.py``). A decision is
an external event::

    client.raise_event(instance_id, "decision", {"approved": True, "approver": "ada"})
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import durafka
from durafka import OrchestrationContext

app = durafka.App("approvals")


@dataclass
class ApprovalRequest:
    """Something that needs a manager's decision.

    Attributes:
        request_id: the business id.
        requester: who asks.
        amount: what it costs.
        timeout_hours: how long to wait for a decision before escalating.
    """

    request_id: str
    requester: str
    amount: float
    timeout_hours: float = 72.0


@dataclass
class Decision:
    """The ``decision`` event's data."""

    approved: bool
    approver: str
    comment: str = ""


@dataclass
class ApprovalOutcome:
    """How a request ended.

    Attributes:
        outcome: ``approved``, ``rejected`` or ``escalated``.
        decided_by: the approver, or whom the request was escalated to.
        waited_hours: how long the orchestration waited (its own, durable clock).
    """

    outcome: str
    decided_by: str
    waited_hours: float


@app.activity
def request_approval(request: ApprovalRequest) -> str:
    """Notify the approvers (here: pretend to send an e-mail)."""
    return f"asked managers to approve {request.request_id} ({request.amount:.2f})"


@app.activity
def escalate(request: ApprovalRequest) -> str:
    """Hand the request to the next level; return who has it now."""
    return "director@example.com"


@app.orchestration
async def approval_workflow(ctx: OrchestrationContext, request: ApprovalRequest) -> ApprovalOutcome:
    """Ask for approval; take the decision, or escalate when the timeout passes first."""
    asked_at = ctx.now()
    await ctx.call_activity(request_approval, request)
    ctx.set_custom_status(
        {"state": "waiting for a decision", "timeout_hours": request.timeout_hours}
    )

    decision = ctx.wait_for_external_event("decision", type=Decision)
    deadline = ctx.create_timer(timedelta(hours=request.timeout_hours))
    winner = await ctx.when_any([decision, deadline])

    if winner is decision:
        deadline.cancel()  # nobody needs the timer any more
        d: Decision = decision.result()
        ctx.set_custom_status({"state": "decided"})
        waited = (ctx.now() - asked_at).total_seconds() / 3600
        return ApprovalOutcome("approved" if d.approved else "rejected", d.approver, waited)

    ctx.set_custom_status({"state": "escalated"})
    escalated_to = await ctx.call_activity(escalate, request)
    waited = (ctx.now() - asked_at).total_seconds() / 3600
    return ApprovalOutcome("escalated", escalated_to, waited)


async def main() -> None:
    """Approve one request by hand; let another one time out (after 2 seconds) and escalate."""
    async with app.run(), app.client() as client:
        approved = await client.start_new(
            approval_workflow, ApprovalRequest("r-1", "bob", 120.0), instance_id="r-1"
        )
        slow = await client.start_new(
            approval_workflow,
            ApprovalRequest("r-2", "eve", 99.0, timeout_hours=2 / 3600),
            instance_id="r-2",
        )
        await client.raise_event(approved, "decision", Decision(True, "ada", "fine"))
        for iid in (approved, slow):
            result = await client.wait_for_completion(iid, timeout=30)
            print(f"{iid}: {result.outcome} by {result.decided_by}")


if __name__ == "__main__":
    asyncio.run(main())
