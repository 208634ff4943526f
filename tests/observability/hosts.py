"""Where the observability tests run their roles: role processes on Kafka, or a memory:// app."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import durafka
from durafka.transport.memory import MemoryTransport
from tests.observability import apps
from tests.support.apps import make_app
from tests.support.processes import RoleLauncher, RoleProcess, hub_env

__all__ = ["ProducerWrappingTransport", "memory_app", "start_roles"]


def start_roles(
    roles: RoleLauncher, app: str, bootstrap: str, hub: str, tmp_path: Path, **env: str
) -> tuple[RoleProcess, RoleProcess]:
    """A ``durafka processor`` and a ``durafka worker`` of ``app`` (4 partitions), with ``env``."""
    variables = hub_env(bootstrap, hub, tmp_path / "state", **env)
    return roles.start("processor", app, variables), roles.start("worker", app, variables)


def memory_app(tmp_path: Path, **overrides: Any) -> durafka.App:
    """The test functions on a private memory:// broker (topics created), no local activities."""
    app = make_app(
        f"memory://{uuid.uuid4().hex[:8]}",
        f"t{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        apps.app.registry,
        local_activities=False,
        **overrides,
    )
    app.ensure_topics()
    return app


class ProducerWrappingTransport:
    """A memory transport whose transactional producers are wrapped (to inject faults).

    Args:
        inner: the transport.
        wrap: returns what stands in for each new transactional producer.
    """

    def __init__(self, inner: MemoryTransport, wrap: Callable[[Any], Any]) -> None:
        self._inner = inner
        self._wrap = wrap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transactional_producer(self, transactional_id: str, **config: Any) -> Any:
        return self._wrap(self._inner.transactional_producer(transactional_id, **config))
