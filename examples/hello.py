"""Hello world: the seed's example, on the in-process ``memory://`` broker.

Run it with ``make demo`` (``DURAFKA_BOOTSTRAP_SERVERS=memory:// python -m
examples.hello``; without the variable it runs there too, with a warning).
Against Kafka, run the processor and worker with ``durafka run
examples.hello:app`` and start instances from another shell with ``durafka start
examples.hello:app hello_world '"World"' --wait``, both with
``DURAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092``.
"""

from __future__ import annotations

import asyncio

import durafka

app = durafka.App("hello")


@app.activity
def say_hello(name: str) -> str:
    """The activity: does the real work (here, a greeting)."""
    return f"Hello, {name}!"


@app.orchestration
async def hello_world(ctx: durafka.OrchestrationContext, name: str) -> str:
    """The orchestration: calls the activity durably and returns its result."""
    return await ctx.call_activity(say_hello, name)


async def main() -> None:
    """Run processor and worker in this process, start one instance, print its output."""
    async with app.run(), app.client() as client:
        instance_id = await client.start_new(hello_world, "World")
        print(await client.wait_for_completion(instance_id, timeout=30))


if __name__ == "__main__":
    asyncio.run(main())
