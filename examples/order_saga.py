"""Order processing as a saga: validate, pay, ship; when shipping fails, refund the payment.

Each step is an activity; the orchestration is the transaction's memory. If
shipping fails for good, the compensation (the refund) runs, durably: a crash
between the failed shipment and the refund only delays the refund.

Run it with ``python -m examples.order_saga`` (embedded ``memory://``). Against
Kafka: ``durafka run examples.order_saga:app`` with
``DURAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092``, then start orders from another shell::

    durafka start examples.order_saga:app process_order \\
        '{"order_id": "o-1", "item": "book", "quantity": 2, "unit_price": 12.5, \\
          "address": "1 Main St"}' --wait
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import durafka
from durafka import ActivityFailed, OrchestrationContext, RetryPolicy

app = durafka.App("orders")

#: Payments and refunds are worth a few retries: payment providers have bad seconds.
PAYMENT_RETRY = RetryPolicy(max_attempts=3, first_interval=timedelta(seconds=1))
#: An address the carrier rejects will not get better; anything else may.
SHIPPING_RETRY = RetryPolicy(
    max_attempts=2,
    first_interval=timedelta(seconds=1),
    non_retryable_errors=("UndeliverableError",),
)


@dataclass
class Order:
    """An order as the shop submits it."""

    order_id: str
    item: str
    quantity: int
    unit_price: float
    address: str


@dataclass
class Payment:
    """What to charge for an order."""

    order_id: str
    amount: float


@dataclass
class OrderResult:
    """How an order ended.

    Attributes:
        outcome: ``shipped``, ``rejected`` (invalid, nothing charged) or
            ``refunded`` (charged, not shippable, money returned).
        detail: why, in words.
        payment_id: the charge, if one was made.
        tracking_number: the shipment, if it left.
        refund_id: the refund, if one was made.
    """

    outcome: str
    detail: str
    payment_id: str | None = None
    tracking_number: str | None = None
    refund_id: str | None = None


class InvalidOrderError(Exception):
    """The order cannot be fulfilled as submitted."""


class UndeliverableError(Exception):
    """The carrier refuses the address."""


# -- activities: the real work (here simulated) -----------------------------------------


@app.activity
def validate_order(order: Order) -> float:
    """Check the order; return the amount to charge."""
    if order.quantity <= 0:
        raise InvalidOrderError(f"order {order.order_id}: quantity must be positive")
    if not order.address.strip():
        raise InvalidOrderError(f"order {order.order_id}: no shipping address")
    return round(order.quantity * order.unit_price, 2)


@app.activity
def charge_payment(payment: Payment) -> str:
    """Charge the customer; return the payment id."""
    return f"pay-{payment.order_id}-{payment.amount:.2f}"


@app.activity
def ship_order(order: Order) -> str:
    """Hand the parcel to the carrier; return the tracking number."""
    if "nowhere" in order.address.lower():
        raise UndeliverableError(f"the carrier does not deliver to {order.address!r}")
    return f"track-{order.order_id}"


@app.activity
def refund_payment(payment_id: str) -> str:
    """Give the money back; return the refund id."""
    return f"refund-of-{payment_id}"


# -- the orchestration -----------------------------------------------------------------------


@app.orchestration
async def process_order(ctx: OrchestrationContext, order: Order) -> OrderResult:
    """Validate, pay and ship ``order``; refund the payment if it cannot be shipped."""
    ctx.set_custom_status("validating")
    try:
        amount = await ctx.call_activity(validate_order, order)
    except ActivityFailed as exc:
        return OrderResult("rejected", exc.details.message)

    ctx.set_custom_status("paying")
    payment_id = await ctx.call_activity(
        charge_payment, Payment(order.order_id, amount), retry=PAYMENT_RETRY
    )

    ctx.set_custom_status("shipping")
    try:
        tracking = await ctx.call_activity(ship_order, order, retry=SHIPPING_RETRY)
    except ActivityFailed as exc:
        # Compensate: the charge must not stand for an order that never ships.
        ctx.set_custom_status("refunding")
        refund_id = await ctx.call_activity(refund_payment, payment_id, retry=PAYMENT_RETRY)
        ctx.logger.info("order %s refunded: %s", order.order_id, exc.details.message)
        return OrderResult(
            "refunded", f"shipping failed: {exc.details.message}", payment_id, refund_id=refund_id
        )
    ctx.set_custom_status("shipped")
    return OrderResult("shipped", f"{order.quantity} x {order.item}", payment_id, tracking)


async def main() -> None:
    """Process three orders in this process: one ships, one is refunded, one is rejected."""
    orders = [
        Order("o-1", "book", 2, 12.5, "1 Main St"),
        Order("o-2", "lamp", 1, 30.0, "Nowhere Island"),
        Order("o-3", "pen", 0, 1.0, "2 Side St"),
    ]
    async with app.run(), app.client() as client:
        ids = [await client.start_new(process_order, o, instance_id=o.order_id) for o in orders]
        for iid in ids:
            result = await client.wait_for_completion(iid, timeout=30)
            print(f"{iid}: {result.outcome} ({result.detail})")


if __name__ == "__main__":
    asyncio.run(main())
