"""Fuzzing the input topics on a running app (issue 11, case 11).

Hypothesis generates what other services might produce into ``H.orchestrations``
and ``H.activities``: random bytes, truncated records, unknown schema
fingerprints, wrong field types, oversized and empty values, null keys, and
well-formed messages nothing can apply (an event for an instance that does not
exist, a kind its target does not take, a signal to an unregistered entity, a
malformed lock request). Each example produces a handful of them interleaved with
valid starts (one through the client, one as another service produces it, on a
partition of its choosing), to a processor and a worker that run the whole time.
Checked after every example:

* both roles are still up;
* every valid instance completes (a misplaced start is forwarded);
* every bad record has exactly one dead letter, naming its topic, partition and
  offset. No record of these strategies has another outcome: the ones that decode
  break the id rules, carry a key that is not their id, or cannot be applied.

Bounded in time: a fixed number of examples (``FUZZ_EXAMPLES``, default 10) and no
shrinking (a failure shows the example as generated), so the test stays within a
minute or two in CI.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import durafka
from durafka.codec.avro import MARKER, codec
from durafka.codec.newer import avro_long, avro_string
from durafka.codec.records import (
    ActivityTask,
    decode_dead_letter,
    encode_activity_task,
    encode_message,
)
from durafka.partitioning import partition_for
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.topology import HubTopics
from durafka.transport import TopicPartition
from tests.e2e import apps
from tests.support.foreign import RawRecord, produce_records, start_message
from tests.support.waiting import wait_until

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
#: Fits a topic (1,048,588 bytes) but not a dead letter copied whole.
OVERSIZED = 999_990
PARTITIONS = 4


class Bad:
    """One bad record: what it is, where it goes (partition None: anywhere)."""

    def __init__(
        self,
        kind: str,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
    ) -> None:
        self.kind = kind
        self.topic = topic
        self.key = key
        self.value = value
        self.partition = partition

    def __repr__(self) -> str:
        shown = self.value if self.value is None or len(self.value) < 80 else self.value[:80]
        return f"Bad({self.kind}, {self.topic}, key={self.key!r}, value={shown!r})"


def _header(schema: str) -> bytes:
    return MARKER + codec(schema).fingerprint.to_bytes(8, "little")


def _schema(topic: str) -> str:
    return "OrchestrationMessage" if topic == "orchestrations" else "ActivityTask"


def _valid(topic: str, iid: str) -> bytes:
    if topic == "orchestrations":
        return start_message(iid, "hello_world", b'"x"')
    return encode_activity_task(ActivityTask(iid, 0, 1, "say_hello", b'"x"', 1, "e:0"))


topics_ = st.sampled_from(["orchestrations", "activities"])
keys = st.one_of(st.none(), st.binary(min_size=1, max_size=24))
ids = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)
ghosts = ids.map(lambda i: f"ghost-{i}")  # never started
nobodies = ids.map(lambda i: f"@Nobody@{i}")  # no entity of that name is registered
unapplicable = st.one_of(
    st.tuples(
        ghosts,
        st.sampled_from(
            [
                HistoryEvent(EventKind.EVENT_RAISED, 1, name="go"),
                HistoryEvent(EventKind.TASK_COMPLETED, 1, seq=0, payload=b"1"),
                HistoryEvent(EventKind.EXECUTION_TERMINATED, 1),
                HistoryEvent(EventKind.TASK_SCHEDULED, 1, seq=0, name="x"),
                HistoryEvent(EventKind.ENTITY_OPERATION, 1, name="add"),
            ]
        ),
    ),
    st.tuples(
        nobodies,
        st.sampled_from(
            [
                HistoryEvent(EventKind.ENTITY_OPERATION, 1, name="add", payload=b"1"),
                HistoryEvent(EventKind.LOCK_REQUESTED, 1, seq=0, payload=b"[not json"),
                HistoryEvent(EventKind.EVENT_RAISED, 1, name="go"),
            ]
        ),
    ),
)
KINDS = [
    "random",
    "empty",
    "truncated",
    "fingerprint",
    "types",
    "null key",
    "oversized",
    "unapplicable",
]


@st.composite
def bad_records(draw: st.DrawFn) -> Bad:
    topic = draw(topics_)
    kind = draw(st.sampled_from(KINDS))
    if kind == "random":
        return Bad(kind, topic, draw(keys), draw(st.binary(max_size=300)))
    if kind == "empty":
        return Bad(kind, topic, draw(keys), draw(st.sampled_from([b"", None])))
    if kind == "truncated":
        iid = draw(ids)
        valid = _valid(topic, iid)
        return Bad(kind, topic, iid.encode(), valid[: draw(st.integers(0, len(valid) - 1))])
    if kind == "fingerprint":
        # The marker and a fingerprint nobody wrote, then a body that does not start
        # with the key (that would be a newer release's record: it stops the partition).
        key = draw(st.binary(min_size=1, max_size=24))
        prefix = avro_string(key.decode("utf-8", "replace"))
        body = draw(st.binary(max_size=200).filter(lambda b: not b.startswith(prefix)))
        return Bad(kind, topic, key, MARKER + draw(st.binary(min_size=8, max_size=8)) + body)
    if kind == "types":
        # The right header, then the id written as an int instead of a string, then
        # bytes: an empty id, an id with NUL, or a body that does not decode.
        body = avro_long(draw(st.integers(0, 40))) + b"\x00" + draw(st.binary(max_size=100))
        return Bad(kind, topic, draw(keys), _header(_schema(topic)) + body)
    if kind == "null key":
        if topic == "orchestrations":  # a valid record without its key
            return Bad(kind, topic, None, _valid(topic, draw(ids)))
        return Bad(kind, topic, None, draw(st.binary(max_size=50)))
    if kind == "unapplicable":
        # A well-formed message, on its partition, that nothing can apply.
        target, event = draw(unapplicable)
        key = target.encode()
        value = encode_message(target, event)
        return Bad(kind, "orchestrations", key, value, partition_for(key, PARTITIONS))
    pattern = draw(st.binary(min_size=1, max_size=16))
    value = (pattern * (OVERSIZED // len(pattern) + 1))[:OVERSIZED]
    return Bad(kind, topic, draw(keys), value)


class DeadLetterLog:
    """Every dead letter of the hub so far, by source (topic, partition, offset)."""

    def __init__(self, app: durafka.App) -> None:
        topic = HubTopics(app.settings.task_hub).dead_letters
        self._consumer = app.transport.consumer(None)
        n = app.transport.partition_count(topic)
        self._consumer.assign({TopicPartition(topic, p): None for p in range(n)})
        self.sources: Counter[tuple[str, int, int]] = Counter()
        self.reasons: dict[tuple[str, int, int], str] = {}

    def poll(self) -> None:
        for record in self._consumer.poll_batch(1000, 0.1):
            value = record.value()
            if value is None:
                continue
            letter = decode_dead_letter(value)
            where = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
            self.sources[where] += 1
            self.reasons[where] = letter["reason"]

    def close(self) -> None:
        self._consumer.close()


def test_fuzzed_input_is_dead_lettered_and_valid_instances_complete(
    app_factory: Callable[..., durafka.App],
) -> None:
    app = app_factory(partitions=PARTITIONS)
    app.ensure_topics()
    topics = HubTopics(app.settings.task_hub)
    names = {"orchestrations": topics.orchestrations, "activities": topics.activities}
    expected: set[tuple[str, int, int]] = set()
    started: list[str] = []
    with app.running() as runner, app.sync_client() as client:
        log = DeadLetterLog(app)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            bad=st.lists(bad_records(), min_size=1, max_size=6),
            placement=st.lists(st.integers(0, PARTITIONS - 1), min_size=7, max_size=7),
            split=st.integers(0, 6),
        )
        def example(bad: list[Bad], placement: list[int], split: int) -> None:
            raw = [
                RawRecord(
                    names[b.topic],
                    placement[i] if b.partition is None else b.partition,
                    b.key,
                    b.value,
                )
                for i, b in enumerate(bad)
            ]
            first, second = raw[:split], raw[split:]
            offsets = produce_records(app, first) if first else []
            iid = f"valid-{len(started)}"
            client.start_new(apps.hello_world, iid, instance_id=iid)
            # Another service's start, on a partition of its choosing (forwarded when it
            # is not the id's).
            foreign = f"foreign-{len(started)}"
            start = RawRecord(
                topics.orchestrations,
                placement[-1],
                foreign.encode(),
                _valid("orchestrations", foreign),
            )
            produce_records(app, [start])
            started.extend([iid, foreign])
            offsets += produce_records(app, second) if second else []
            expected.update((r.topic, r.partition, o) for r, o in zip(raw, offsets, strict=True))

            assert client.wait_for_completion(iid, timeout=60) == f"Hello, {iid}!"
            assert client.wait_for_completion(foreign, timeout=60) == "Hello, x!"

            def accounted() -> bool:
                log.poll()
                return set(log.sources) >= expected

            wait_until(accounted, timeout=60, what="a dead letter of every bad record")
            assert runner.failed is None, runner.failed
            unexpected = set(log.sources) - expected
            assert not unexpected, {w: log.reasons[w] for w in unexpected}
            twice = {w: n for w, n in log.sources.items() if n > 1}
            assert not twice, twice

        try:
            example()
        finally:
            log.close()
    assert len(started) == 2 * EXAMPLES and len(expected) >= EXAMPLES
