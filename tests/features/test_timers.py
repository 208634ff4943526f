"""Durable timers: ``ctx.sleep`` / ``ctx.create_timer`` on memory:// and the real broker."""

from __future__ import annotations

import time

from durafka.client import Client
from durafka.runtime.history import EventKind
from tests.features import apps
from tests.features.helpers import count


def test_sleep_fires_after_its_delay_and_is_recorded(client: Client) -> None:
    began = time.monotonic()
    iid = client.start_new(apps.sleeper, 1.0)
    elapsed_in_orchestration = client.wait_for_completion(iid, timeout=60)
    took = time.monotonic() - began

    assert elapsed_in_orchestration >= 1.0
    assert took >= 1.0  # real time: no test clock here
    history = client.get_history(iid)
    created = [e for e in history if e.kind is EventKind.TIMER_CREATED]
    fired = [e for e in history if e.kind is EventKind.TIMER_FIRED]
    assert len(created) == 1 and len(fired) == 1
    assert fired[0].seq == created[0].seq
    # The fired event carries the scheduled time, not the time it was noticed.
    assert fired[0].fire_at == created[0].fire_at
    assert created[0].fire_at is not None and created[0].fire_at >= created[0].timestamp + 1000


def test_many_timers_fire_in_due_order(client: Client) -> None:
    delays = [1.2, 0.3, 0.8, 0.1, 0.5]
    ids = {client.start_new(apps.sleeper, d, instance_id=f"sleep-{d}"): d for d in delays}
    for iid in ids:
        client.wait_for_completion(iid, timeout=60)
    finished = sorted(ids, key=lambda i: client.get_status(i).last_updated_at_ms)  # type: ignore[union-attr]
    assert [ids[i] for i in finished] == sorted(delays)
    for iid in ids:
        assert count(client.get_history(iid), EventKind.TIMER_FIRED) == 1
