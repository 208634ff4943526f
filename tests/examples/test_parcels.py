"""The parcels sample (the app of docs/topics.md and examples/java/) on memory://."""

from __future__ import annotations

import pytest

from durafka.errors import SerializationError
from durafka.testing import TestEnvironment
from examples import parcels
from tests.examples.conftest import run_sample


def test_sample_runs_on_memory() -> None:
    assert run_sample("examples.parcels").splitlines() == [
        "parcel p-1 picked up by Bo",
        "@Shelf@A1: 2 parcels",
    ]


async def test_a_delivery_checks_its_input_and_waits_for_the_courier() -> None:
    async with TestEnvironment(parcels.app) as env:
        with pytest.raises(SerializationError, match="input of 'deliver'"):
            await env.client.start_new(parcels.deliver, {"parcel_id": "p-1"})
        iid = await env.client.start_new(parcels.deliver, parcels.Parcel("p-2", "Ada"))
        await env.client.raise_event(iid, "picked_up", parcels.PickUp("Bo"))
        delivery = await env.wait_for_completion(iid)
    assert delivery == parcels.Delivery("p-2", "Bo", "parcel p-2 picked up by Bo")
