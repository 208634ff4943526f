"""StatusIndex: pages read from the kept index equal a filter-and-sort of the whole view."""

from __future__ import annotations

import random

import pytest

from durafka.client._common import Page
from durafka.client.listing import InstanceQuery, StatusIndex, encode_continuation
from durafka.client.status_view import StatusView
from durafka.codec.records import encode_status
from durafka.status import OrchestrationStatus, RuntimeStatus
from tests.client.conftest import status

T0 = 1_700_000_000_000
NAMES = ["bill", "ship", "pack"]


def _naive(statuses: dict[str, OrchestrationStatus], q: InstanceQuery) -> Page[OrchestrationStatus]:
    """The reference: scan, filter, sort, cut (what list_page did before the index)."""
    key = lambda s: (s.created_at_ms, s.instance_id)  # noqa: E731
    chosen = sorted((s for s in statuses.values() if q.matches(s)), key=key, reverse=q.descending)
    if q.after is not None:
        chosen = [s for s in chosen if (key(s) < q.after if q.descending else key(s) > q.after)]
    items = chosen[: q.page_size]
    more = len(chosen) > q.page_size
    return Page(items, encode_continuation(items[-1]) if more else None)


def _random_status(rng: random.Random, iid: str) -> OrchestrationStatus:
    return status(
        iid,
        rng.choice(list(RuntimeStatus)),
        name=rng.choice(NAMES),
        created_at_ms=T0 + rng.randrange(50) * 1000,  # many ties on the time
    )


def _random_query(rng: random.Random, after: tuple[int, str] | None) -> InstanceQuery:
    statuses = rng.choice([None, frozenset(rng.sample(list(RuntimeStatus), rng.randint(1, 3)))])
    low = rng.choice([None, T0 + rng.randrange(50) * 1000])
    return InstanceQuery(
        statuses=statuses,
        name=rng.choice([None, *NAMES, "nobody"]),
        created_from=low,
        created_to=rng.choice([None, T0 + rng.randrange(50) * 1000]),
        id_prefix=rng.choice([None, None, "i1", "i2", "i3"]),
        descending=rng.random() < 0.5,
        page_size=rng.randint(1, 30),
        after=after,
    )


@pytest.mark.parametrize("seed", range(5))
def test_index_kept_current_pages_like_a_full_scan(seed: int) -> None:
    """Statuses change, move between statuses and are purged; every page matches the scan."""
    rng = random.Random(seed)
    view = StatusView()
    current: dict[str, OrchestrationStatus] = {}
    ids = [f"i{n}" for n in range(300)]
    for round_ in range(30):
        batch: list[tuple[bytes | None, bytes | None]] = []
        for iid in rng.sample(ids, 40):
            if rng.random() < 0.1:
                batch.append((iid.encode(), None))  # purged
                current.pop(iid, None)
            else:
                s = _random_status(rng, iid)
                batch.append((iid.encode(), encode_status(s)))
                current[iid] = s
        view.apply(batch)
        if round_ == 0:
            view.counts()  # builds the index; later batches update it
        for _ in range(10):
            query = _random_query(rng, None)
            # Walk every page: each equals the scan's page from the same cursor.
            while True:
                got = view.page(query)
                want = _naive(current, query)
                assert [s.instance_id for s in got.items] == [s.instance_id for s in want.items]
                assert got.continuation == want.continuation
                if got.continuation is None:
                    break
                last = got.items[-1]
                query = InstanceQuery(
                    **{
                        **{f: getattr(query, f) for f in query.__slots__},
                        "after": (last.created_at_ms, last.instance_id),
                    }
                )
        counts = view.counts()
        for rs in RuntimeStatus:
            assert counts[rs] == sum(1 for s in current.values() if s.runtime_status is rs)
        for name in NAMES:
            by_name = view.counts(name)
            assert sum(by_name.values()) == sum(1 for s in current.values() if s.name == name)
        assert view.names() == {
            n: c for n in sorted(NAMES) if (c := sum(1 for s in current.values() if s.name == n))
        }


def test_index_of_a_snapshot_is_the_same_as_a_kept_one() -> None:
    rng = random.Random(7)
    statuses = [_random_status(rng, f"i{n}") for n in range(200)]
    index = StatusIndex.of(statuses)
    by_id = {s.instance_id: s for s in statuses}
    for _ in range(50):
        query = _random_query(rng, None)
        got, want = index.page(query), _naive(by_id, query)
        assert [s.instance_id for s in got.items] == [s.instance_id for s in want.items]
