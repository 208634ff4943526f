"""Deterministic helpers (now, new_uuid, random) and the replay-safe logger, with no cache."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

import durafka
from durafka.runtime.history import EventKind
from tests.features import apps


def test_helpers_return_the_same_values_on_every_replay(
    app_factory: Callable[..., durafka.App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durafka.orchestration")
    app = app_factory(cache_size=0)  # every step replays the whole history
    steps = 4
    with app.running(), app.sync_client() as client:
        iid = client.start_new(apps.deterministic, steps)
        for _ in range(steps):
            client.raise_event(iid, "next")
        output = client.wait_for_completion(iid, timeout=60)
        history = client.get_history(iid)

    # What the first (live) run of each step recorded in history...
    recorded = [
        json.loads(e.payload or b"null") for e in history if e.kind is EventKind.TASK_SCHEDULED
    ]
    # ...is what the last replay computed again.
    assert output == recorded
    assert len({v["uuid"] for v in recorded}) == steps
    assert len({v["random"] for v in recorded}) == steps
    step_times = [e.timestamp for e in history if e.kind is EventKind.ORCHESTRATOR_STARTED]
    assert recorded[0]["now"] == _iso(step_times[0])

    # Logged once per step, although the early steps were replayed several times.
    lines = [r.getMessage() for r in caplog.records if r.name == "durafka.orchestration"]
    assert lines == [f"[{iid}] deterministic step {i}" for i in range(steps)]


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
