"""Golden histories of the examples replay against today's code (durafka.testing.replay).

``golden/*.json`` were written by real runs of the examples (``client.get_history``
as JSON, the format ``durafka.codec.history_json`` defines). A change to an
example's orchestrator that would break its running instances fails here, as a
user's CI would; the last test proves the check can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durafka import OrchestrationContext
from durafka.codec.history_json import dumps_history, loads_history
from durafka.errors import NonDeterminismError
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.testing import replay
from examples import hello, order_saga

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    ("name", "app"),
    [
        ("hello-world", hello.app),
        ("saga-shipped", order_saga.app),
        ("saga-refunded", order_saga.app),
    ],
)
def test_a_golden_history_replays_against_today_s_code(name: str, app: Any) -> None:
    text = (GOLDEN / f"{name}.json").read_text()
    executor = replay(app, text)
    assert executor.is_complete, "the golden run completed; so must its replay"
    # The JSON form is lossless: it writes back byte for byte.
    assert dumps_history(loads_history(text)) + "\n" == text


def test_a_changed_orchestrator_fails_the_replay_naming_the_calls() -> None:
    """Shipping before charging: the refunded saga's history no longer fits."""
    changed = Registry()
    for activity in (
        order_saga.validate_order,
        order_saga.charge_payment,
        order_saga.ship_order,
        order_saga.refund_payment,
    ):
        changed.add_activity(activity)

    async def process_order(ctx: OrchestrationContext, order: order_saga.Order) -> Any:
        await ctx.call_activity(order_saga.validate_order, order)
        await ctx.call_activity(order_saga.ship_order, order)
        return None

    changed.add_orchestration(process_order)
    with pytest.raises(NonDeterminismError, match=r"sequence #1.*charge_payment.*ship_order"):
        replay(changed, (GOLDEN / "saga-refunded.json").read_text())


def test_a_history_without_a_start_is_refused() -> None:
    events = [e for e in loads_history((GOLDEN / "hello-world.json").read_text())]
    without_start = [e for e in events if e.kind is not EventKind.EXECUTION_STARTED]
    with pytest.raises(ValueError, match="EXECUTION_STARTED"):
        replay(hello.app, without_start)
