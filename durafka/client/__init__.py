"""Clients: start, signal, inspect and await orchestration instances and entities.

:class:`Client` is synchronous, :class:`AsyncClient` has the same methods as
coroutines. Both write control records to ``H.orchestrations`` and read
statuses from a :class:`StatusView` of ``H.status`` (entities from an
:class:`EntityView` of ``H.entities``).
"""

from durafka.client._common import Page
from durafka.client.aio import AsyncClient
from durafka.client.entity_view import EntityView
from durafka.client.status_view import StatusView
from durafka.client.sync import Client

__all__ = ["AsyncClient", "Client", "EntityView", "Page", "StatusView"]
