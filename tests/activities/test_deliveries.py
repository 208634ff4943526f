"""Delivery counts: tasks that keep taking their worker down end, innocent ones are spared.

The notes a worker commits with its offsets are read back by the next owner of a
partition (durafka/activities/deliveries.py). Here the "earlier owners" are
simulated by committing a note for the group ``H.workers`` before the worker
starts; tests/e2e/test_worker_poison.py kills real worker processes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

import durafka
from durafka.activities.deliveries import (
    MAX_NOTE_CHARS,
    Note,
    PartitionTrack,
    decode_note,
    encode_note,
)
from durafka.errors import PoisonTaskError
from durafka.partitioning import partition_for
from durafka.registry import Registry
from durafka.runtime.history import EventKind
from durafka.runtime.retry import RetryPolicy
from durafka.topology import HubTopics
from durafka.transport import TopicPartition, Transport
from tests.activities.workers import (
    ACTIVITY_PARTITIONS,
    Running,
    assert_all_committed,
    produce_tasks,
    read_results,
    task,
)
from tests.support.waiting import wait_until

# -- the note (pure) -------------------------------------------------------------------------


def test_a_note_round_trips_in_a_compact_string() -> None:
    note = Note(120, {100, 101, 102, 105, 110}, {100, 105}, {100: 2, 101: 1, 102: 1})
    text = encode_note(note)
    assert text == "d1;r120;u100-102,105,110;s100,105;n101-102:1,100:2"
    assert decode_note(text) == note


def test_a_takeover_counts_the_started_tasks_once_more() -> None:
    note = Note(10, {3, 4, 5, 7}, {4, 5}, {3: 2, 4: 1})
    # 3 waited (not started): its count stays; 4 and 5 were started: one more each;
    # offsets below the committed one are over.
    assert note.take_over(4) == {4: 2, 5: 1, 7: 0}
    assert note.take_over(0) == {3: 2, 4: 2, 5: 1, 7: 0}


def test_a_track_skips_what_an_earlier_owner_finished() -> None:
    track = PartitionTrack(5, Note(9, {5, 7}, {5}, {}))
    assert track.take(5) == (True, 1)  # started before: delivered once without a result
    assert track.take(6) == (False, 0)  # below the reservation, not unfinished: done
    assert track.take(7) == (True, 0)  # waited, never started
    assert track.take(9) == (True, 0)  # new
    track.done.add(5)
    assert track.take_prefix() == 7
    note = track.note(7)
    assert note.reserved == 10 and note.unfinished == {7, 9} and note.counts == {}


def test_past_the_last_note_a_takeover_is_careful_and_counts_one_delivery() -> None:
    # The last owner committed r=10, then may have started 10, 11, ... and died.
    track = PartitionTrack(8, Note(10, {8}, {8}, {}), careful_span=4)
    assert track.note_dirty  # the takeover's note is committed before anything starts
    assert track.take(8) == (True, 1)
    assert track.take(10) == (True, 1)  # maybe started after the last note
    assert track.take(13) == (True, 1)
    assert track.take(14) == (True, 0)  # past the window: nobody started it
    assert [track.careful(o) for o in (8, 10, 13, 14)] == [True, True, True, False]


def test_without_any_note_there_is_no_careful_window() -> None:
    track = PartitionTrack(0, None, careful_span=512)
    assert track.take(0) == (True, 0) and not track.careful(0)


def test_an_offset_given_back_stays_unfinished_with_its_count() -> None:
    track = PartitionTrack(5, Note(8, {5, 6}, {6}, {6: 2}))
    assert track.take(5) == (True, 0)
    assert track.take(6) == (True, 3)
    track.untake(6)  # its partition stops there (a record of a newer schema)
    track.done.add(5)
    assert track.take_prefix() == 6
    note = track.note(6)
    assert note.unfinished == {6} and note.counts == {6: 3}
    assert note.started == set()  # given back before it started


def test_foreign_or_malformed_metadata_is_an_empty_note() -> None:
    assert decode_note("") is None
    assert decode_note("written by someone else") is None
    assert decode_note("d1;rX;u1") is None
    assert decode_note("d1;r0;u;s;n") == Note()  # a note saying nothing is one


def test_a_note_that_would_not_fit_drops_counts_then_everything() -> None:
    scattered = set(range(0, 4000, 2))
    counts = dict.fromkeys(scattered, 1)
    too_many = encode_note(Note(5000, set(range(0, 1000, 2)), set(), counts))
    decoded = decode_note(too_many)
    assert len(too_many) <= MAX_NOTE_CHARS and decoded is not None and decoded.counts == {}
    assert encode_note(Note(5000, scattered, scattered, counts)) == ""  # runs all again


# -- a worker reading the notes of earlier owners --------------------------------------------


def commit_note(transport: Transport, hub: str, partition: int, offset: int, note: Note) -> None:
    """Commit ``offset`` and ``note`` for ``H.workers``, as an earlier worker would have."""
    tp = TopicPartition(HubTopics(hub).activities, partition)
    consumer = transport.consumer(f"{hub}.workers")
    producer = transport.transactional_producer(f"{hub}.test-earlier-owner")
    try:
        consumer.assign({tp: None})
        producer.init_transactions()
        producer.begin_transaction()
        producer.send_offsets({tp: offset}, consumer.group_metadata(), {tp: encode_note(note)})
        producer.commit_transaction()
    finally:
        producer.close()
        consumer.close()


def _recording_registry(runs: Counter[str], log: list[tuple[str, float, float]]) -> Registry:
    registry = Registry()
    lock = threading.Lock()

    def work(name: str) -> str:
        began = time.monotonic()
        time.sleep(0.05)
        with lock:
            runs[name] += 1
            log.append((name, began, time.monotonic()))
        return name

    registry.add_activity(work)
    return registry


def test_a_task_delivered_too_often_fails_instead_of_running(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    registry = _recording_registry(runs, [])
    p = partition_for(b"poison", ACTIVITY_PARTITIONS)
    produce_tasks(
        transport, hub, [task("poison", "work", "poison"), task("poison", "work", "ok", seq=1)]
    )
    # Two owners died with offset 0 started: this is its third delivery.
    commit_note(transport, hub, p, 0, Note(1, {0}, {0}, {0: 2}))
    start_worker(registry, max_activity_deliveries=3)

    results = read_results(transport, hub, 2)
    poison = results[("poison", 0, 1)].event
    assert poison.kind is EventKind.TASK_FAILED and poison.failure is not None
    assert poison.failure.is_caused_by(PoisonTaskError)
    assert "delivered 3 times without a result" in poison.failure.message
    assert not RetryPolicy(max_attempts=5).is_retryable(poison.failure)
    assert results[("poison", 1, 1)].event.kind is EventKind.TASK_COMPLETED
    assert runs == Counter({"ok": 1})  # the poison task never ran again
    assert_all_committed(transport, hub)


def test_a_task_delivered_twice_runs_alone(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    log: list[tuple[str, float, float]] = []
    registry = _recording_registry(runs, log)
    p = partition_for(b"suspect", ACTIVITY_PARTITIONS)
    others = [task(f"o{n}", "work", f"o{n}") for n in range(8)]
    produce_tasks(transport, hub, [task("suspect", "work", "suspect"), *others])
    commit_note(transport, hub, p, 0, Note(1, {0}, {0}, {0: 1}))  # now its second
    start_worker(registry)

    read_results(transport, hub, 9)
    assert sum(runs.values()) == 9
    (alone,) = [(b, e) for name, b, e in log if name == "suspect"]
    beside = [name for name, b, e in log if name != "suspect" and b < alone[1] and e > alone[0]]
    assert beside == []  # nothing ran while it did
    assert_all_committed(transport, hub)


def test_what_an_earlier_owner_finished_past_the_offset_is_not_run_again(
    transport: Transport, hub: str, start_worker: Callable[..., Running]
) -> None:
    runs: Counter[str] = Counter()
    registry = _recording_registry(runs, [])
    p = partition_for(b"h", ACTIVITY_PARTITIONS)
    produce_tasks(transport, hub, [task("h", "work", f"t{n}", seq=n) for n in range(5)])
    # The earlier owner finished 1-3 while 0 (hung, or running when it died) held the offset.
    commit_note(transport, hub, p, 0, Note(4, {0}, {0}, {}))
    start_worker(registry)

    results = read_results(transport, hub, 2)
    assert set(results) == {("h", 0, 1), ("h", 4, 1)}
    assert runs == Counter({"t0": 1, "t4": 1})
    assert_all_committed(transport, hub)


@pytest.mark.parametrize("delivery", [1, 2])
def test_the_activity_context_tells_the_delivery(
    transport: Transport, hub: str, start_worker: Callable[..., Running], delivery: int
) -> None:
    seen: list[int] = []
    registry = Registry()

    def work(ctx: durafka.ActivityContext) -> int:
        seen.append(ctx.delivery)
        assert durafka.ActivityContext.current() is ctx
        return ctx.delivery

    registry.add_activity(work)
    produce_tasks(transport, hub, [task("d", "work")])
    p = partition_for(b"d", ACTIVITY_PARTITIONS)
    commit_note(transport, hub, p, 0, Note(1, {0}, {0}, {0: delivery - 1}))
    start_worker(registry)
    wait_until(lambda: bool(seen), what="the activity")
    assert seen == [delivery]


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-partition", "steady-state"])
def test_no_task_starts_where_a_crash_would_go_uncounted(
    transport: Transport, hub: str, start_worker: Callable[..., Running], fresh: bool
) -> None:
    """Whenever a task starts, a takeover would count it: the committed note lists it
    as started, or it lies past the note's reservation (the careful window).

    A crash right after the start must never leave a note saying "taken, not
    started" for it: the next owner would then run it without counting the
    delivery, and a poison task would run once more than ``max_activity_deliveries``
    (seen in CI: 6 crashes instead of 5, the first worker's first delivery).
    """
    p = partition_for(b"n", ACTIVITY_PARTITIONS)
    tp = TopicPartition(HubTopics(hub).activities, p)
    probe = transport.consumer(f"{hub}.workers")
    seen: dict[int, tuple[int, Note | None]] = {}
    lock = threading.Lock()
    registry = Registry()

    def note_at_start(n: int) -> int:
        # Runs where a crash would hit: read what the next owner would find.
        note = decode_note(probe.committed_metadata([tp])[tp])
        with lock:
            seen[n] = (n, note)
        time.sleep(0.02)
        return n

    registry.add_activity(note_at_start)
    tasks = [task("n", "note_at_start", n, seq=n) for n in range(4)]
    try:
        if fresh:
            # Already there when the worker is assigned the partition: taken in its
            # first poll, beside the assignment.
            produce_tasks(transport, hub, tasks)
            start_worker(registry, max_concurrent_activities=1)
        else:
            start_worker(registry, max_concurrent_activities=1)
            wait_until(lambda: probe.committed_metadata([tp])[tp] != "", what="the first note")
            # One runs, the others wait in the backlog across the commits of results.
            produce_tasks(transport, hub, tasks)
        read_results(transport, hub, 4)
    finally:
        probe.close()
    assert sorted(seen) == [0, 1, 2, 3]
    for offset, note in seen.values():  # produced without a transaction: task n at offset n
        assert note is not None, f"task {offset} started with no note committed"
        assert offset in note.started or offset >= note.reserved, (
            f"task {offset} started while the committed note {note} says "
            "it was taken and not started: a crash now would not be counted"
        )


@pytest.mark.parametrize("unclean", [False, True], ids=["first-start", "after-unclean-exit"])
def test_after_an_unclean_exit_a_partition_without_a_note_is_taken_over_carefully(
    transport: Transport, hub: str, start_worker: Callable[..., Running], unclean: bool
) -> None:
    """The last process ran activities next to its processor and died (its crash
    marker was found): a local run leaves no note, so a task that took the process
    down before any worker committed a note on its partition was not counted (CI:
    ``durafka run`` with a poison activity crashed 6 times instead of 5). Now such a
    partition's first tasks count one delivery, as after a takeover."""
    seen: list[int] = []
    registry = Registry()

    def work(ctx: durafka.ActivityContext) -> int:
        seen.append(ctx.delivery)
        return ctx.delivery

    registry.add_activity(work)
    produce_tasks(transport, hub, [task("u", "work")])
    start_worker(registry, after_unclean_exit=unclean)
    wait_until(lambda: bool(seen), what="the activity")
    assert seen == ([1] if unclean else [0])  # deliveries before this one
