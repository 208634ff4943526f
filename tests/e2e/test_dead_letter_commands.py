"""Reading dead letters back and redriving them after a fix (issue 11, case 4).

``durafka dead-letters list|show|redrive`` and ``durafka instances quarantined``:
the functions under them on both transports, the commands themselves as child
processes on the real broker.
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
from durafka.redrive import REDRIVEN_FROM_HEADER, read_dead_letters, redrive
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import instance_key
from durafka.topology import HubTopics, partition_for
from durafka.transport import TopicPartition
from tests.e2e import apps
from tests.support.foreign import produce_raw
from tests.support.processes import REPO_ROOT, hub_env
from tests.support.waiting import wait_until


def event_for(iid: str) -> bytes:
    return encode_message(iid, HistoryEvent(EventKind.EVENT_RAISED, 0, name="go", payload=b'"!"'))


def test_a_dead_letter_is_redriven_once_after_the_fix(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory()
    hub = app.settings.task_hub
    topics = HubTopics(hub)
    n = app.settings.partitions
    iid = "early-event"
    partition = partition_for(iid.encode(), n)
    with app.running(), app.sync_client() as client:
        # An event that arrives before its instance exists: dead-lettered.
        produce_raw(
            app, topics.orchestrations, partition, iid.encode(), event_for(iid), [("trace", b"t1")]
        )
        garbage = produce_raw(app, topics.orchestrations, partition, b"junk", b"not avro")
        entries = wait_until(
            lambda: (found := read_dead_letters(app.transport, hub)) and len(found) == 2 and found,
            timeout=60,
            what="two dead letters",
        )
        [event_letter] = [e for e in entries if e.letter and e.letter["key"] == iid.encode()]
        [junk_letter] = [e for e in entries if e.letter and e.letter["key"] == b"junk"]
        assert junk_letter.letter is not None and junk_letter.letter["source_offset"] == garbage

        # The fix: the instance now exists and waits for the event.
        client.start_new(apps.greets_after_event, "x", instance_id=iid)
        wait_until(
            lambda: (s := client.get_status(iid)) is not None and s.custom_status == "waiting",
            timeout=60,
        )
        [outcome] = redrive(app.transport, hub, [event_letter.id])
        assert outcome.refused is None and outcome.target == f"{topics.orchestrations}[{partition}]"
        assert client.wait_for_completion(iid, timeout=60) == "Hello, x! !"

        # Never twice, whoever asks.
        [again] = redrive(app.transport, hub, [event_letter.id])
        assert again.refused == "it was redriven already"
        after = {e.id: e for e in read_dead_letters(app.transport, hub)}
        assert after[event_letter.id].redriven and not after[junk_letter.id].redriven
        # Garbage goes back only as it came: nothing would apply it.
        [junk] = redrive(app.transport, hub, [junk_letter.id])
        assert junk.refused is None
        [missing] = redrive(app.transport, hub, ["0:999999"])
        assert missing.refused == "no such dead letter"

    traced = [
        dict(headers)
        for key, headers in raw_records(app, topics.orchestrations, partition)
        if key == iid.encode() and ("trace", b"t1") in headers
    ]
    assert len(traced) == 2  # the original and the one redrive
    headers = traced[1]
    assert headers["trace"] == b"t1" and headers[REDRIVEN_FROM_HEADER] == event_letter.id.encode()


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
    from tests.support.apps import make_app

    app = make_app(kafka_bootstrap, hub, tmp_path / "state", apps.app.registry)
    topics = HubTopics(hub)
    n = app.settings.partitions
    iid = "cli-early"
    victim = "cli-victim"
    try:
        with app.running(), app.sync_client() as client:
            client.start_new(apps.waits_forever, instance_id=victim)
            wait_until(lambda: client.get_status(victim), timeout=60)
        # Corrupt the victim's header, then send it an event and an early event elsewhere.
        vp = partition_for(victim.encode(), n)
        produce_raw(app, topics.changelog, vp, instance_key(victim), b"garbage")
        app.close()
        app = make_app(kafka_bootstrap, hub, tmp_path / "state", apps.app.registry)
        with app.running(), app.sync_client() as client:
            produce_raw(app, topics.orchestrations, vp, victim.encode(), event_for(victim))
            produce_raw(
                app,
                topics.orchestrations,
                partition_for(iid.encode(), n),
                iid.encode(),
                event_for(iid),
            )
            client.wait_for_status(victim, timeout=60)
            wait_until(
                lambda: len(read_dead_letters(app.transport, hub)) >= 3,
                timeout=60,
                what="the dead letters",
            )
            env = hub_env(kafka_bootstrap, hub, tmp_path / "cli-state")
            spec = "tests.e2e.apps:app"

            listed = cli(env, "dead-letters", "list", spec, "--json")
            assert listed.returncode == 0, listed.stderr
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            by_key = {row["key"]: row for row in rows}
            assert "unknown instance" in by_key[iid]["reason"]
            assert "quarantined" in by_key[victim]["reason"]
            # Its header and its history chunk, as they were stored.
            stored = [r for r in rows if r["source"].startswith(topics.changelog)]
            assert {r["key"][:2] for r in stored} == {"i/", "h/"}
            assert all("could not be decoded" in r["reason"] for r in stored)

            shown = cli(env, "dead-letters", "show", spec, by_key[iid]["id"])
            assert shown.returncode == 0, shown.stderr
            detail = json.loads(shown.stdout)
            assert detail["value"]["instance_id"] == iid
            assert detail["value"]["event"]["kind"] == "EVENT_RAISED"
            assert detail["redrivable"] is True

            refused = cli(env, "dead-letters", "redrive", spec, stored[0]["id"])
            assert refused.returncode == 1 and "not an input topic" in refused.stderr

            client.start_new(apps.greets_after_event, "c", instance_id=iid)
            wait_until(
                lambda: (s := client.get_status(iid)) is not None and s.custom_status == "waiting",
                timeout=60,
            )
            redriven = cli(env, "dead-letters", "redrive", spec, by_key[iid]["id"])
            assert redriven.returncode == 0, redriven.stderr
            assert f"redriven {by_key[iid]['id']}" in redriven.stdout
            assert client.wait_for_completion(iid, timeout=60) == "Hello, c! !"

            quarantined = cli(env, "instances", "quarantined", spec, "--json")
            assert quarantined.returncode == 0, quarantined.stderr
            [row] = [json.loads(line) for line in quarantined.stdout.splitlines()]
            assert row["instance_id"] == victim and "could not be decoded" in row["reason"]
    finally:
        app.close()
