"""Dead letters read back and redriven after a fix; quarantined instances (issue 11, 3 and 4).

``durafka dead-letters list|show|redrive|quarantined``: the management layer under
them on both transports, the commands themselves as child processes on the real
broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import durafka
from durafka.codec.records import encode_message
from durafka.management import Management
from durafka.management.redrive import REDRIVEN_FROM_HEADER
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import instance_key
from durafka.topology import HubTopics, partition_for
from durafka.transport import TopicPartition
from tests.e2e import apps
from tests.support.apps import make_app
from tests.support.foreign import produce_raw
from tests.support.processes import REPO_ROOT, hub_env
from tests.support.waiting import wait_until


def event_for(iid: str) -> bytes:
    return encode_message(iid, HistoryEvent(EventKind.EVENT_RAISED, 0, name="go", payload=b'"!"'))


def test_a_dead_letter_is_redriven_once_after_the_fix(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    topics = HubTopics(app.settings.task_hub)
    n = app.settings.partitions
    iid = "early-event"
    partition = partition_for(iid.encode(), n)
    with app.running(), app.sync_client() as client, Management.for_app(app) as m:
        # An event that arrives before its instance exists: dead-lettered.
        produce_raw(
            app, topics.orchestrations, partition, iid.encode(), event_for(iid), [("trace", b"t1")]
        )
        garbage = produce_raw(app, topics.orchestrations, partition, b"junk", b"not avro")
        page = wait_until(
            lambda: (p := m.dead_letters()) and len(p.items) == 2 and p,
            timeout=60,
            what="two dead letters",
        )
        by_key = {d.key: d for d in page.items}
        early, junk = by_key[iid], by_key["junk"]
        assert junk.source_offset == garbage
        assert early.not_redrivable is None and "unknown instance" in early.reason

        # The fix: the instance now exists and waits for the event.
        client.start_new(apps.greets_after_event, "x", instance_id=iid)
        client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=60)
        assert m.dead_letter(early.id).redriven is False
        [outcome] = m.redrive([early.id])
        assert outcome.refused is None and outcome.target == f"{topics.orchestrations}[{partition}]"
        assert client.wait_for_completion(iid, timeout=60) == "Hello, x! !"

        # Never twice, whoever asks; the receipt is no dead letter.
        [again] = m.redrive([early.id])
        assert again.refused == "it was redriven already"
        assert m.dead_letter(early.id).redriven is True
        assert {d.id for d in m.dead_letters().items} == {early.id, junk.id}
        [missing] = m.redrive(["0:999999"])
        assert missing.refused == "no such dead letter"

    traced = [
        dict(headers)
        for key, headers in raw_records(app, topics.orchestrations, partition)
        if key == iid.encode() and ("trace", b"t1") in headers
    ]
    assert len(traced) == 2  # the original and the one redrive
    assert traced[1][REDRIVEN_FROM_HEADER] == early.id.encode()


def raw_records(
    app: durafka.App, topic: str, partition: int
) -> list[tuple[bytes | None, list[tuple[str, bytes | None]]]]:
    consumer = app.transport.consumer(None)
    tp = TopicPartition(topic, partition)
    end = consumer.watermarks(tp)[1]
    consumer.assign({tp: None})
    out: list[tuple[bytes | None, list[tuple[str, bytes | None]]]] = []
    try:
        while consumer.position(tp) < end:
            for r in consumer.poll_batch(500, 0.2):
                out.append((r.key(), list(r.headers() or [])))  # type: ignore[arg-type]
    finally:
        consumer.close()
    return out


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durafka.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_commands_list_show_redrive_and_quarantined(
    kafka_bootstrap: str, hub: str, tmp_path: Path
) -> None:
    app = make_app(kafka_bootstrap, hub, tmp_path / "state", apps.app.registry)
    topics = HubTopics(hub)
    n = app.settings.partitions
    iid = "cli-early"
    victim = "cli-victim"
    env = hub_env(kafka_bootstrap, hub, tmp_path / "cli-state")
    try:
        with app.running(), app.sync_client() as client:
            client.start_new(apps.waits_forever, instance_id=victim)
            wait_until(lambda: client.get_status(victim), timeout=60)
        # Corrupt the victim's header; then send it an event, and an early event elsewhere.
        vp = partition_for(victim.encode(), n)
        produce_raw(app, topics.changelog, vp, instance_key(victim), b"garbage")
        app.close()
        app = make_app(kafka_bootstrap, hub, tmp_path / "state", apps.app.registry)
        with app.running(), app.sync_client() as client:
            produce_raw(app, topics.orchestrations, vp, victim.encode(), event_for(victim))
            ip = partition_for(iid.encode(), n)
            produce_raw(app, topics.orchestrations, ip, iid.encode(), event_for(iid))
            client.wait_for_status(victim, timeout=60)

            def listed() -> list[dict[str, str]]:
                out = cli(env, "dead-letters", "list", "--json")
                assert out.returncode == 0, out.stderr
                items: list[dict[str, str]] = json.loads(out.stdout)["items"]
                return items if len(items) >= 4 else []

            rows = wait_until(listed, timeout=60, what="the dead letters")
            by_key = {row["key"]: row for row in rows}
            assert "unknown instance" in by_key[iid]["reason"]
            assert "quarantined" in by_key[victim]["reason"]
            # Its header and its history chunk, as they were stored.
            stored = [r for r in rows if r["source_topic"] == topics.changelog]
            assert {r["key"][:2] for r in stored} == {"i/", "h/"}
            assert all("could not be decoded" in r["reason"] for r in stored)

            table = cli(env, "dead-letters", "list")
            assert table.returncode == 0 and by_key[iid]["id"] in table.stdout

            shown = cli(env, "dead-letters", "show", by_key[iid]["id"], "--json")
            assert shown.returncode == 0, shown.stderr
            detail = json.loads(shown.stdout)
            assert detail["source_offset"] >= 0 and detail["not_redrivable"] is None
            assert detail["redriven"] is False

            refused = cli(env, "dead-letters", "redrive", stored[0]["id"])
            assert refused.returncode == 1 and "not an input topic" in refused.stdout

            client.start_new(apps.greets_after_event, "c", instance_id=iid)
            client.status_view.wait_for(iid, lambda s: s.custom_status == "waiting", timeout=60)
            redriven = cli(env, "dead-letters", "redrive", by_key[iid]["id"])
            assert redriven.returncode == 0, redriven.stderr
            assert f"redriven {by_key[iid]['id']}" in redriven.stdout
            assert client.wait_for_completion(iid, timeout=60) == "Hello, c! !"

            quarantined = cli(env, "dead-letters", "quarantined", "--json")
            assert quarantined.returncode == 0, quarantined.stderr
            [row] = json.loads(quarantined.stdout)
            assert row["instance_id"] == victim and "could not be decoded" in row["reason"]
    finally:
        app.close()
