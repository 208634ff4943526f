"""list_instances: filtering, deterministic order, stable paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from durafka.client import Client
from durafka.client._common import Page
from durafka.client.listing import InstanceQuery, StatusIndex
from durafka.status import OrchestrationStatus, RuntimeStatus
from tests.client.conftest import Hub, status
from tests.support.waiting import wait_until

T0 = 1_700_000_000_000


def list_page(statuses: list[OrchestrationStatus], **kwargs: Any) -> Page[OrchestrationStatus]:
    """A page of a snapshot of statuses, as a status view pages its own."""
    return StatusIndex.of(statuses).page(InstanceQuery.of(**kwargs))


STATUSES = [
    status("e", RuntimeStatus.RUNNING, name="ship", created_at_ms=T0 + 2000),
    status("a", RuntimeStatus.COMPLETED, name="bill", created_at_ms=T0),
    status("c", RuntimeStatus.FAILED, name="bill", created_at_ms=T0 + 1000),
    status("b", RuntimeStatus.RUNNING, name="bill", created_at_ms=T0 + 1000),  # same time as c
    status("d", RuntimeStatus.PENDING, name="ship", created_at_ms=T0 + 1500),
    status("f", RuntimeStatus.SUSPENDED, name="ship", created_at_ms=T0 + 3000),
    status("g", RuntimeStatus.COMPLETED, name="ship", created_at_ms=T0 + 3000),
]


def _ids(items: list[OrchestrationStatus]) -> list[str]:
    return [s.instance_id for s in items]


def _page(**kwargs: object) -> tuple[list[str], str | None]:
    args: dict[str, object] = {
        "status": None,
        "name": None,
        "created_from": None,
        "created_to": None,
        "page_size": 100,
        "continuation": None,
        **kwargs,
    }
    page = list_page(STATUSES, **args)  # type: ignore[arg-type]
    return _ids(page.items), page.continuation


def test_order_is_created_at_then_id() -> None:
    assert _page() == (["a", "b", "c", "d", "e", "f", "g"], None)


def test_paging_walks_every_item_once() -> None:
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        ids, token = _page(page_size=3, continuation=token)
        seen += ids
        pages += 1
        if token is None:
            break
    assert seen == ["a", "b", "c", "d", "e", "f", "g"] and pages == 3
    assert _page(page_size=7) == (seen, None)  # an exactly full last page has no continuation


def test_paging_is_stable_when_instances_are_added() -> None:
    first = list_page(
        STATUSES,
        status=None,
        name=None,
        created_from=None,
        created_to=None,
        page_size=2,
        continuation=None,
    )
    grown = [*STATUSES, status("aa", created_at_ms=T0)]  # sorts before the cut
    rest = list_page(
        grown,
        status=None,
        name=None,
        created_from=None,
        created_to=None,
        page_size=100,
        continuation=first.continuation,
    )
    assert _ids(first.items) == ["a", "b"]
    assert _ids(rest.items) == ["c", "d", "e", "f", "g"]


def test_filters() -> None:
    assert _page(status=RuntimeStatus.RUNNING)[0] == ["b", "e"]
    assert _page(status=[RuntimeStatus.COMPLETED, "FAILED"])[0] == ["a", "c", "g"]
    assert _page(name="ship")[0] == ["d", "e", "f", "g"]
    at = datetime.fromtimestamp((T0 + 1000) / 1000, tz=UTC)
    until = datetime.fromtimestamp((T0 + 3000) / 1000, tz=UTC)
    assert _page(created_from=at, created_to=until)[0] == ["b", "c", "d", "e"]
    assert _page(created_from=at, name="bill", status=RuntimeStatus.FAILED)[0] == ["c"]


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="page_size"):
        _page(page_size=0)
    with pytest.raises(ValueError, match="continuation"):
        _page(continuation="!!not-a-token")
    with pytest.raises(ValueError, match="timezone-aware"):
        _page(created_from=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="unknown runtime status"):
        _page(status="DONE")


@pytest.fixture
def client(memory_env: Hub) -> Iterator[Client]:
    with Client(memory_env.settings, transport=memory_env.transport) as c:
        yield c


def test_client_lists_the_view(memory_env: Hub, client: Client) -> None:
    memory_env.publish(*STATUSES, "d")  # d purged
    wait_until(lambda: len(client.status_view) == 6, timeout=10)
    page = client.list_instances(name="ship", page_size=2)
    assert _ids(page.items) == ["e", "f"] and page.continuation is not None
    page = client.list_instances(name="ship", page_size=2, continuation=page.continuation)
    assert _ids(page.items) == ["g"] and page.continuation is None
