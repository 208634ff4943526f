"""Finished instances are purged automatically after ``finished_retention_ms`` (issue 10,
hole 7): the changelog holds what is live, so restores stay bounded."""

from __future__ import annotations

from collections.abc import Callable

import durafka
from durafka import RuntimeStatus
from durafka.client import Client
from durafka.runtime.history import IdReusePolicy
from durafka.status import TERMINAL_STATUSES
from durafka.topology import HubTopics
from tests.features import apps
from tests.features.helpers import read_topic
from tests.support.waiting import wait_until

RETENTION_MS = 1500


def purged(client: Client, iid: str) -> bool:
    return client.get_status(iid) is None


def finished(client: Client, iid: str) -> bool:
    status = client.get_status(iid)
    return status is not None and status.runtime_status in TERMINAL_STATUSES


def store_keys_of(app: durafka.App, iid: str) -> set[bytes]:
    """The changelog keys of ``iid`` whose last record is a value (what a restore keeps)."""
    last: dict[bytes, bytes | None] = {}
    for key, value in read_topic(app.transport, HubTopics(app.settings.task_hub).changelog):
        if key is not None and iid.encode() + b"\x00" in key:
            last[key] = value
    return {k for k, v in last.items() if v is not None}


def test_finished_instances_are_purged_after_the_retention(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(finished_retention_ms=RETENTION_MS)
    with app.running(), app.sync_client() as client:
        completed = client.start_new(apps.fails_or_not, False)
        failed = client.start_new(apps.fails_or_not, True)
        terminated = client.start_new(apps.wait_for, "never")
        wait_until(lambda: client.get_status(terminated) is not None, what="started")
        client.terminate(terminated, "not needed")
        for iid in (completed, failed, terminated):
            wait_until(lambda iid=iid: finished(client, iid), timeout=60, what=f"{iid} finished")
        assert client.get_status(completed).runtime_status is RuntimeStatus.COMPLETED  # type: ignore[union-attr]
        for iid in (completed, failed, terminated):
            wait_until(lambda iid=iid: purged(client, iid), timeout=60, what=f"{iid} purged")
            # Gone from the state too: the changelog's last word on each key is a tombstone.
            assert store_keys_of(app, iid) == set()


def test_an_id_started_again_is_not_purged_by_the_earlier_execution(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(finished_retention_ms=RETENTION_MS)
    with app.running(), app.sync_client() as client:
        client.start_new(apps.fails_or_not, False, instance_id="again")
        wait_until(lambda: finished(client, "again"), timeout=60, what="first execution done")
        # A second execution of the id, still running when the first one's timer fires.
        client.start_new(
            apps.wait_for,
            "go",
            instance_id="again",
            id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE,
        )
        wait_until(
            lambda: (
                (s := client.get_status("again")) is not None
                and s.runtime_status is RuntimeStatus.RUNNING
            ),
            timeout=60,
            what="second execution running",
        )
        # An instance finished after the first execution: purged after it, on the same clock.
        later = client.start_new(apps.fails_or_not, False)
        wait_until(lambda: purged(client, later), timeout=60, what="the later instance purged")
        status = client.get_status("again")
        assert status is not None and status.runtime_status is RuntimeStatus.RUNNING
        client.raise_event("again", "go", "now")
        assert client.wait_for_completion("again", timeout=60) == "now"
        # The second execution gets its own purge timer.
        wait_until(lambda: purged(client, "again"), timeout=60, what="second execution purged")


def test_no_purge_without_a_retention(app_factory: Callable[..., durafka.App]) -> None:
    app = app_factory(finished_retention_ms=0)
    with app.running(), app.sync_client() as client:
        kept = client.start_new(apps.fails_or_not, False)
        wait_until(lambda: finished(client, kept), timeout=60, what="finished")
        # A timer would be on the changelog with the instance's keys; there is none.
        assert not any(key.startswith(b"t/") for key in store_keys_of(app, kept))
        assert store_keys_of(app, kept)
