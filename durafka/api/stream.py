"""Live updates for the dashboard: server-sent events fed by the status view.

The status view calls its listeners with the ids of every applied batch (on
its feeder thread); a stream hands them to its event loop in one hop and sends:

* ``counts`` events (instances per runtime status) when anything changed, at
  most every ``min_interval`` seconds, for the list page;
* ``instance`` events (the full status) when the one instance it watches
  changed, for an instance page.

Nothing polls: an idle stream sends a comment every 15 s so proxies keep it open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request

from durafka.client.status_view import StatusView

__all__ = ["status_events"]

_KEEPALIVE_SECONDS = 15.0


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def status_events(
    request: Request,
    view: StatusView,
    render: Callable[[], tuple[str, Any]],
    *,
    instance_id: str | None = None,
    min_interval: float = 0.5,
) -> AsyncIterator[str]:
    """Server-sent events: ``render()`` (an event name and its data) now and after each change.

    Args:
        request: the client's request (the stream ends when it disconnects).
        view: the status view whose changes wake the stream.
        render: what to send: ``(event name, JSON-able data)``.
        instance_id: only changes of this instance wake it (None: any change).
        min_interval: seconds between two events at least (bursts are coalesced).
    """
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def on_change(keys: list[str]) -> None:
        if instance_id is None or instance_id in keys:
            loop.call_soon_threadsafe(changed.set)

    remove = view.add_listener(on_change)
    try:
        name, data = render()
        yield _event(name, data)
        while not await request.is_disconnected():
            try:
                await asyncio.wait_for(changed.wait(), _KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            changed.clear()
            name, data = render()
            yield _event(name, data)
            await asyncio.sleep(min_interval)
    finally:
        remove()
