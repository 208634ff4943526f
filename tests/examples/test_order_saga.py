"""The order saga sample: shipped, refunded after a failed shipment, rejected."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import durafka
from durafka.client import Client
from durafka.runtime.history import EventKind
from examples import order_saga
from examples.order_saga import Order, OrderResult
from tests.examples.conftest import run_sample

OnKafka = Callable[[durafka.App], AbstractContextManager[Client]]


def test_saga_on_the_real_broker(on_kafka: OnKafka) -> None:
    with on_kafka(order_saga.app) as client:
        shipped = client.start_new(
            order_saga.process_order, Order("o-1", "book", 2, 12.5, "1 Main St"), instance_id="o-1"
        )
        refunded = client.start_new(
            order_saga.process_order, Order("o-2", "lamp", 1, 30.0, "Nowhere"), instance_id="o-2"
        )
        rejected = client.start_new(
            order_saga.process_order, Order("o-3", "pen", 0, 1.0, "Side St"), instance_id="o-3"
        )

        ok = client.wait_for_completion(shipped, timeout=60)
        assert ok == OrderResult("shipped", "2 x book", "pay-o-1-25.00", "track-o-1")

        comp = client.wait_for_completion(refunded, timeout=60)
        assert comp.outcome == "refunded"
        assert comp.payment_id == "pay-o-2-30.00"
        assert comp.refund_id == "refund-of-pay-o-2-30.00"
        assert comp.tracking_number is None
        assert "does not deliver" in comp.detail
        # The carrier's refusal is non-retryable: one shipping attempt, then the refund.
        names = [e.name for e in client.get_history(refunded) if e.kind is EventKind.TASK_SCHEDULED]
        assert names == ["validate_order", "charge_payment", "ship_order", "refund_payment"]
        status = client.get_status(refunded)
        assert status is not None and status.custom_status == "refunding"

        no = client.wait_for_completion(rejected, timeout=60)
        assert no.outcome == "rejected" and no.payment_id is None
        names = [e.name for e in client.get_history(rejected) if e.kind is EventKind.TASK_SCHEDULED]
        assert names == ["validate_order"]  # nothing charged, nothing to compensate


def test_sample_runs_on_memory() -> None:
    out = run_sample("examples.order_saga")
    assert out.splitlines() == [
        "o-1: shipped (2 x book)",
        "o-2: refunded (shipping failed: the carrier does not deliver to 'Nowhere Island')",
        "o-3: rejected (order o-3: quantity must be positive)",
    ]
