"""Delivery counts of activity tasks, kept in the worker's offset commit metadata.

Kafka does not count deliveries, and a task that kills its worker (``os._exit``
in the activity, a segfault in a C extension, the OOM killer) leaves no trace
of its own: the partition goes to the next worker at the same committed
offset, which runs it again, forever. So every worker transaction commits,
with each partition's offset, a *note* (Kafka's offset commit metadata, a
string per partition kept with the offset, ``offset.metadata.max.bytes`` =
4096 by default) saying:

* ``r``: how far the owner has taken tasks;
* ``u``: the offsets below ``r`` (from the committed one on) that have no
  committed outcome yet; every other offset below ``r`` has one (a result
  committed past a task still running, a task given up): the next owner does
  not run those again;
* ``s``: the ones of ``u`` that were started, or may start before the next
  note (a task waiting for a slot starts the moment one frees; a clean stop
  commits a note that takes those back);
* ``n``: how many owners delivered each task of ``u`` without a result.

When a worker is assigned a partition (a *takeover*: after a crash, a
rebalance, a restart), every task in ``s`` was delivered without a result once
more: its count goes up by one, committed (with a note saying it owns the
partition now) before anything of the partition starts. The last owner may
also have started tasks past ``r`` after its last commit (a commit follows
every iteration, but a task can kill its worker within microseconds): the new
owner takes each task of the next ``2 * max_concurrent_activities`` offsets
past ``r`` (the *careful window*; transaction markers take offsets too) as
delivered once, and starts a task of the window, or one with deliveries, only
once a committed note lists it in ``s``, so that no crash there goes
unrecorded. Past the window, and on a partition in steady state, tasks start at
once and the note rides on the commit of their results: counting costs no
transaction of its own.

A task whose count reached ``max_activity_deliveries`` fails with
:class:`~durafka.errors.PoisonTaskError` instead of running; a task with a
count of 2 or more runs *alone* in its worker, so that the next crash is
blamed on it only and not on the innocent tasks that happened to run beside it
(they are counted at most twice: for the crashes that revealed the poison,
before it was isolated). A poison task therefore runs
``max_activity_deliveries`` times: its first crash (unrecorded, in steady
state) is counted by the window, the later ones by ``s``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "MAX_NOTE_CHARS",
    "SUSPECT_DELIVERIES",
    "Note",
    "PartitionTrack",
    "decode_note",
    "encode_note",
]

log = logging.getLogger("durafka.worker")

#: A note is cut to this many characters (Kafka refuses metadata over 4096 bytes).
MAX_NOTE_CHARS = 3000
#: Deliveries without a result from which a task runs alone in its worker.
SUSPECT_DELIVERIES = 2

_VERSION = "d1"


@dataclass
class Note:
    """The delivery note of one partition (see the module docstring).

    Attributes:
        reserved: every offset below it that is not in ``unfinished`` has a committed
            outcome (or is a transaction marker); offsets at or above it were never taken.
        unfinished: offsets below ``reserved`` taken without a committed outcome.
        started: the ones of ``unfinished`` that were started (or about to be).
        counts: earlier deliveries without a result, by offset (0 when absent).
    """

    reserved: int = 0
    unfinished: set[int] = field(default_factory=set)
    started: set[int] = field(default_factory=set)
    counts: dict[int, int] = field(default_factory=dict)

    def take_over(self, committed: int) -> dict[int, int]:
        """The unfinished offsets a new owner finds, with their deliveries so far.

        A started one was delivered once more without a result (its owner died,
        was stopped, or lost the partition); offsets below ``committed`` are over.
        """
        counts, started = self.counts, self.started
        return {o: counts.get(o, 0) + (o in started) for o in self.unfinished if o >= committed}


class PartitionTrack:
    """The offsets a worker took from one assigned partition, and its delivery note.

    The worker commits the contiguous done prefix of the taken offsets
    (:meth:`take_prefix`) with the :meth:`note` of what lies beyond. A new track
    replaces the old one after a revocation or a rewind, so jobs started under an
    old track (which keep a reference to it) can tell that their offset no
    longer counts.

    Args:
        committed: the group's committed offset (where reading starts).
        note: the delivery note committed with it (by the last owner, or by this
            worker before a rewind); None when there is none.
        careful_span: how many offsets past the last owner's reservation it may
            have started since its last commit (the *careful window*: see the
            module docstring); 0 for a track that owes nothing to anybody.
    """

    __slots__ = (
        "careful_end",
        "carried",
        "committed",
        "deliveries",
        "done",
        "floor",
        "last_note",
        "note_dirty",
        "pending",
        "started",
        "taken_end",
        "unknown_from",
    )

    def __init__(self, committed: int, note: Note | None = None, careful_span: int = 0) -> None:
        # Where to rewind after an aborted transaction: the committed offset, then
        # each commit.
        self.committed = committed
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        known = note is not None
        note = note or Note()
        #: The note committed with ``committed`` (a rewind starts over from it).
        self.last_note = note
        # Below the floor, an offset not carried over has a committed outcome.
        self.floor = max(note.reserved, committed)
        # Earlier owners' unfinished tasks not taken again yet: offset -> deliveries.
        self.carried = note.take_over(committed)
        self.taken_end = committed
        # Of the taken offsets: earlier deliveries (when any) and the started ones.
        self.deliveries: dict[int, int] = {}
        self.started: set[int] = set()
        # A takeover commits a note before anything of the partition starts: the
        # counts it made, and the fact that somebody owns the partition now.
        self.note_dirty = careful_span > 0 or any(o >= committed for o in note.started)
        # Tasks below careful_end start only once a committed note lists them: the last
        # owner may have started some past its last note (uncounted) before it died.
        # No note at all: nobody ever started anything here (an owner commits one
        # before its first start), so there is no window.
        self.careful_end = self.floor + careful_span if known else committed
        # Past the last note nothing is known of them: each is taken as delivered once.
        self.unknown_from: int | None = self.floor if known and careful_span else None

    def take(self, offset: int) -> tuple[bool, int]:
        """Take ``offset``: whether it is still to do, and its earlier deliveries."""
        self.pending.append(offset)
        self.taken_end = max(self.taken_end, offset + 1)
        deliveries = self.carried.pop(offset, None)
        if deliveries is None:
            if offset < self.floor:  # finished by an earlier owner
                self.done.add(offset)
                return False, 0
            unknown = self.unknown_from
            if unknown is None or not unknown <= offset < self.careful_end:
                return True, 0
            deliveries = 1  # maybe started by the last owner, after its last note
        if deliveries:
            self.deliveries[offset] = deliveries
        return True, deliveries

    def careful(self, offset: int) -> bool:
        """Whether a task at ``offset`` may start only once a note lists it as started."""
        return offset < self.careful_end or offset in self.deliveries

    def untake(self, offset: int) -> None:
        """Give back the offset just taken (its partition stops before it)."""
        if self.pending and self.pending[-1] == offset:
            self.pending.pop()
            self.taken_end = offset
            if offset < self.floor:
                # Carried over from an earlier owner: still unfinished, counts kept.
                self.carried[offset] = self.deliveries.pop(offset, 0)

    def take_prefix(self) -> int | None:
        """Drop the contiguous done prefix; the offset to commit if it moved, else None."""
        last: int | None = None
        pending, done = self.pending, self.done
        while pending and pending[0] in done:
            last = pending.popleft()
            done.discard(last)
        return None if last is None else last + 1

    def note(self, end: int) -> Note:
        """The note to commit with offset ``end`` (after :meth:`take_prefix`)."""
        done = self.done
        unfinished = {o for o in self.pending if o not in done}
        unfinished.update(o for o in self.carried if o >= end)
        counts = {o: n for o, n in self.carried.items() if n and o >= end}
        counts.update((o, n) for o, n in self.deliveries.items() if o in unfinished)
        return Note(
            max(self.floor, self.taken_end, end),
            unfinished,
            {o for o in self.started if o in unfinished},
            counts,
        )

    def committed_to(self, end: int, note: Note) -> None:
        """The commit of offset ``end`` and ``note`` succeeded."""
        self.committed = end
        self.last_note = note
        self.floor = note.reserved
        self.note_dirty = False
        if self.deliveries:
            self.deliveries = {o: n for o, n in self.deliveries.items() if o >= end}
        if self.started:
            self.started = {o for o in self.started if o >= end}


def encode_note(note: Note) -> str:
    """The metadata string of ``note``, at most :data:`MAX_NOTE_CHARS` long.

    Too long it drops the counts (a poison task then runs a few more times, never
    forever: every takeover counts again), then, if the unfinished offsets alone
    do not fit (thousands of them, scattered), says nothing: the next owner runs
    everything from the committed offset again, as at-least-once allows.
    """
    unfinished = _ranges(sorted(note.unfinished))
    started = _ranges(sorted(note.started))
    text = f"{_VERSION};r{note.reserved};u{unfinished};s{started};n{_count_runs(note.counts)}"
    if len(text) <= MAX_NOTE_CHARS:
        return text
    text = f"{_VERSION};r{note.reserved};u{unfinished};s{started};n"
    log.warning(
        "a delivery note is too long (%d unfinished offsets); dropping its counts",
        len(note.unfinished),
    )
    return text if len(text) <= MAX_NOTE_CHARS else ""


def decode_note(text: str) -> Note | None:
    """The note of a metadata string; None for none (an empty or foreign string).

    Never raises: metadata written by something else (or a later format) must
    not stop the worker; it only loses the counts.
    """
    if not text.startswith(_VERSION + ";"):
        if text:
            log.warning("ignoring offset metadata that is not a delivery note: %.80r", text)
        return None
    note = Note()
    try:
        for part in text.split(";")[1:]:
            tag, body = part[:1], part[1:]
            if tag == "r":
                note.reserved = int(body)
            elif tag == "u":
                note.unfinished = _parse_ranges(body)
            elif tag == "s":
                note.started = _parse_ranges(body)
            elif tag == "n":
                for run in body.split(",") if body else ():
                    span, _, count = run.partition(":")
                    for offset in _parse_ranges(span):
                        note.counts[offset] = int(count)
    except ValueError:
        log.warning("ignoring a malformed delivery note: %.80r", text)
        return None
    return note


def _ranges(offsets: list[int]) -> str:
    return ",".join(_span(first, last) for first, last in _runs(offsets))


def _count_runs(counts: Mapping[int, int]) -> str:
    by_count: dict[int, list[int]] = {}
    for offset in sorted(counts):
        by_count.setdefault(counts[offset], []).append(offset)
    return ",".join(
        f"{_span(first, last)}:{n}"
        for n, offsets in sorted(by_count.items())
        for first, last in _runs(offsets)
    )


def _runs(offsets: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted ``offsets`` as (first, last) pairs."""
    it = iter(offsets)
    first = last = next(it, None)
    if first is None or last is None:
        return
    for offset in it:
        if offset != last + 1:
            yield first, last
            first = offset
        last = offset
    yield first, last


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _parse_ranges(body: str) -> set[int]:
    offsets: set[int] = set()
    for item in body.split(",") if body else ():
        first, sep, last = item.partition("-")
        offsets.update(range(int(first), (int(last) if sep else int(first)) + 1))
    return offsets
