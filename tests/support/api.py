"""Serving the HTTP API of ``durafka serve`` on a free port, in a thread of the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from durafka.api import ApiTokens, create_api
from durafka.management import Management
from tests.support.waiting import wait_until


@contextmanager
def serving(management: Management, tokens: ApiTokens, **options: Any) -> Iterator[str]:
    """Serve ``create_api(management, tokens, **options)``; yields its base URL."""
    api = create_api(management, tokens, **options)
    config = uvicorn.Config(
        api, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="durafka-api", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what="the API server to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
