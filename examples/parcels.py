"""Parcels: the app other services talk to in docs/topics.md and examples/java/.

A ``deliver`` orchestration waits for the ``picked_up`` event of its parcel, then
writes a receipt (an activity) and returns a ``Delivery``; a ``Shelf`` entity
counts the parcels on one shelf. Nothing here knows about other languages: a
Java service starts deliveries, raises the event and signals shelves by
producing Avro records (``examples/java/``), and reads the results from
``H.status`` and ``H.entities``.

Run it with ``python -m examples.parcels`` (embedded ``memory://``). Against Kafka,
run ``durafka run examples.parcels:app`` with ``DURAFKA_BOOTSTRAP_SERVERS`` set, then
the Java client (see examples/java/README.md) or::

    durafka start examples.parcels:app deliver '{"parcel_id": "p-1", "recipient": "Ada"}'
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import durafka
from durafka import OrchestrationContext

app = durafka.App("parcels")


@dataclass
class Parcel:
    """The input of ``deliver``: ``{"parcel_id": "p-1", "recipient": "Ada"}``."""

    parcel_id: str
    recipient: str


@dataclass
class PickUp:
    """The data of the ``picked_up`` event: ``{"courier": "Bo"}``."""

    courier: str


@dataclass
class Delivery:
    """The output of ``deliver``."""

    parcel_id: str
    courier: str
    receipt: str


@app.activity
def write_receipt(delivery: Delivery) -> str:
    """The receipt handed to the recipient (here: a line of text)."""
    return f"parcel {delivery.parcel_id} picked up by {delivery.courier}"


@app.orchestration
async def deliver(ctx: OrchestrationContext, parcel: Parcel) -> Delivery:
    """Wait until a courier picks the parcel up, then write its receipt."""
    ctx.set_custom_status({"state": "waiting for a courier"})
    pickup = await ctx.wait_for_external_event("picked_up", type=PickUp)
    receipt = await ctx.call_activity(write_receipt, Delivery(parcel.parcel_id, pickup.courier, ""))
    return Delivery(parcel.parcel_id, pickup.courier, receipt)


@app.entity
class Shelf(durafka.Entity[int]):
    """How many parcels lie on one shelf (the entity key is the shelf)."""

    def put(self, count: int) -> None:
        """``count`` parcels were put on the shelf."""
        self.state += count

    def take(self, count: int) -> None:
        """``count`` parcels were taken off the shelf (never below zero)."""
        if count > self.state:
            raise ValueError(f"only {self.state} parcels on the shelf, cannot take {count}")
        self.state -= count


async def main() -> None:
    """Deliver one parcel and fill one shelf, in this process."""
    shelf = durafka.EntityId("Shelf", "A1")
    async with app.run(), app.client() as client:
        iid = await client.start_new(deliver, Parcel("p-1", "Ada"), instance_id="p-1")
        await client.raise_event(iid, "picked_up", PickUp("Bo"))
        delivery = await client.wait_for_completion(iid, timeout=30)
        print(delivery.receipt)
        await client.signal_entity(shelf, "put", 3)
        await client.signal_entity(shelf, "take", 1)
        for _ in range(300):
            found = await client.get_entity(shelf)
            if found is not None and found.state == 2:
                print(f"{shelf}: {found.state} parcels")
                break
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
