"""Memory of many waiting orchestrations: ``python -m durafka.bench.waiting``.

Starts N orchestrations that wait for an external event (they stay Running),
in one process hosting the processor, the worker and the client, then reports
the peak RSS and checks that an instance evicted from the cache still
completes (it is replayed from its history). Issue 4's target: 100,000 waiting
instances with RSS bounded by ``cache_size``, not by N.

Example:
    python -m durafka.bench.waiting --n 100000 --cache-size 10000 --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import uuid
from dataclasses import dataclass

import durafka


@dataclass(frozen=True)
class WaitingResult:
    """What one run measured."""

    n: int
    cache_size: int
    transport: str
    start_seconds: float
    peak_rss_mib: float
    evicted_instance_completed: bool


def _app(bootstrap: str, cache_size: int, partitions: int) -> durafka.App:
    app = durafka.App(
        f"waiting{uuid.uuid4().hex[:8]}",
        bootstrap_servers=bootstrap,
        cache_size=cache_size,
        partitions=partitions,
        state_dir=tempfile.mkdtemp(prefix="durafka-waiting-"),
    )

    @app.orchestration(name="waiter")
    async def waiter(ctx: durafka.OrchestrationContext) -> str:
        return str(await ctx.wait_for_external_event("go"))

    return app


async def measure(
    n: int, *, cache_size: int, bootstrap: str = "memory://", partitions: int = 8
) -> WaitingResult:
    """Start ``n`` waiting instances, report peak RSS, complete the first (evicted) one."""
    app = _app(bootstrap, cache_size, partitions)
    async with app.run(), app.client() as client:
        window = asyncio.Semaphore(2000)

        async def start(i: int) -> None:
            async with window:
                await client.start_new("waiter", instance_id=f"w{i}")

        began = time.perf_counter()
        await asyncio.gather(*(start(i) for i in range(n)))
        last = f"w{n - 1}"
        while await client.get_status(last) is None:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        await client.raise_event("w0", "go", "done")
        done = await client.wait_for_completion("w0", timeout=120) == "done"
    app.close()
    return WaitingResult(n, cache_size, bootstrap, elapsed, peak, done)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--cache-size", type=int, default=10_000)
    parser.add_argument("--bootstrap", default="memory://")
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    result = asyncio.run(
        measure(
            args.n, cache_size=args.cache_size, bootstrap=args.bootstrap, partitions=args.partitions
        )
    )
    print(result)


if __name__ == "__main__":
    main()
