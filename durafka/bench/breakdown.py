"""``durafka bench breakdown``: where the time of one W1 instance goes, hop by hop.

W1 instances run one at a time on Kafka, in one process (processor, worker and
client on threads, local activities on), as ``durafka bench W1`` measures its
latency. While they run, the processor's methods and the Kafka transport's
transactional producer and consumer are wrapped, for this command only, to
stamp ``perf_counter`` times at each hop; nothing is wrapped otherwise, so the
instrumentation costs nothing when it is off. Each instance's stamps give:

====================  =================================================================
hop                   from → to
====================  =================================================================
start produce + ack   the client's ``start_new`` called → returned (record acknowledged)
fetch wake-up         the start acknowledged → the processor's poll returns it
step                  poll returned → the local activity begins (replay, decisions)
local activity        the activity, run inside the batch, and its result applied
prepare               → the transaction begins (status, history and changelog records)
produce               ``begin_transaction`` + ``produce`` calls (client-side queueing)
flush                 ``flush``: AddPartitionsToTxn, then the records produced and acked
send offsets          ``send_offsets_to_transaction``: AddOffsetsToTxn + TxnOffsetCommit
end txn               ``commit_transaction``: EndTxn (the coordinator writes the markers)
store writes          commit returned → the batch is done (RocksDB writes, cache)
status view fetch     the batch done → the client's status view sees the completion
                      (negative when the view saw it before the commit call returned)
====================  =================================================================

With ``--processes separate`` (a processor process and a worker process, the
production layout) nothing can be wrapped in the children: the hops come from
the timestamps Kafka keeps with each record (set when it is produced, in ms)
and the client's clock, all on this machine:

=====================  ================================================================
hop                    from → to
=====================  ================================================================
start → task           ``start_new`` called → the processor produces the activity task
                       (client produce, processor fetch, step)
task → result          → the worker produces the result (the processor's transaction,
                       the worker's read_committed fetch, the activity)
result → status        → the processor produces the completed status (the worker's
                       transaction, the processor's fetch, step)
status → seen          → the client sees it (the processor's transaction, status view)
=====================  ================================================================

Then it measures the floors on the same broker: a bare idempotent produce and
its acknowledgement, and bare transactions writing one record to one and two
partitions with and without offsets (what each commit hop costs with nothing of
durafka around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from durafka.app import App
from durafka.bench import drivers, workloads
from durafka.bench.config import BenchConfig, ProcessMode
from durafka.bench.drivers import percentile
from durafka.bench.hosting import EmbeddedHost, SeparateHost
from durafka.bench.progress import NoProgress, Progress
from durafka.bench.runner import _drop_hub
from durafka.client import AsyncClient
from durafka.errors import BenchmarkError
from durafka.topology import HubTopics
from durafka.transport import TopicPartition

__all__ = [
    "HOPS",
    "SEPARATE_HOPS",
    "hop_durations",
    "measure_floors",
    "run_breakdown",
    "summarize",
]

#: The hops of one W1 instance, in order, and the stamps that bound each.
HOPS: tuple[tuple[str, str, str], ...] = (
    ("start produce + ack", "start", "acked"),
    ("fetch wake-up", "acked", "polled"),
    ("step", "polled", "local_begin"),
    ("local activity", "local_begin", "local_end"),
    ("prepare", "local_end", "txn_begin"),
    ("produce", "txn_begin", "flush_begin"),
    ("flush (add partitions, produce)", "flush_begin", "flush_end"),
    ("send offsets", "flush_end", "offsets_end"),
    ("end txn", "offsets_end", "commit_end"),
    ("store writes", "commit_end", "batch_end"),
    ("status view fetch", "batch_end", "seen"),
)

#: The hops of one W1 instance with a processor and a worker process (record timestamps).
SEPARATE_HOPS: tuple[tuple[str, str, str], ...] = (
    ("start -> task (client produce, processor fetch, step)", "start", "task"),
    ("task -> result (processor txn, worker fetch, activity)", "task", "result"),
    ("result -> status (worker txn, processor fetch, step)", "result", "status"),
    ("status -> seen (processor txn, status view)", "status", "seen"),
)


class _Stamps:
    """The first time each stamp was taken since :meth:`reset` (thread-safe enough: GIL)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.active = False

    def reset(self) -> None:
        self.times = {}

    def take(self, name: str) -> None:
        if self.active and name not in self.times:
            self.times[name] = time.perf_counter()


def _wrap(
    owner: Any, name: str, before: str | None, after: str | None, stamps: _Stamps
) -> Callable[[], None]:
    """Replace ``owner.name`` by a version stamping ``before`` and ``after``; returns the undo."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            stamps.take(before)
        try:
            return original(*args, **kwargs)
        finally:
            if after is not None:
                stamps.take(after)

    setattr(owner, name, wrapped)
    return lambda: setattr(owner, name, original)


@contextlib.contextmanager
def _instrumented(stamps: _Stamps, orchestrations_topic: str) -> Iterator[None]:
    from durafka.processor.loop import Processor
    from durafka.transport.kafka import KafkaConsumer, KafkaTransactionalProducer

    undo = [
        _wrap(Processor, "_run_local_activities", "local_begin", "local_end", stamps),
        _wrap(Processor, "_commit", None, "batch_end", stamps),
        _wrap(KafkaTransactionalProducer, "begin_transaction", "txn_begin", None, stamps),
        _wrap(KafkaTransactionalProducer, "flush", "flush_begin", "flush_end", stamps),
        _wrap(KafkaTransactionalProducer, "send_offsets", None, "offsets_end", stamps),
        _wrap(KafkaTransactionalProducer, "commit_transaction", None, "commit_end", stamps),
    ]
    poll_batch = KafkaConsumer.poll_batch

    def polled(self: KafkaConsumer, max_records: int, timeout: float) -> list[Any]:
        records = poll_batch(self, max_records, timeout)
        if records and records[0].topic() == orchestrations_topic:
            stamps.take("polled")
        return records

    KafkaConsumer.poll_batch = polled  # type: ignore[method-assign]
    undo.append(lambda: setattr(KafkaConsumer, "poll_batch", poll_batch))
    try:
        yield
    finally:
        for restore in reversed(undo):
            restore()


def hop_durations(
    times: dict[str, float], hops: Sequence[tuple[str, str, str]] = HOPS
) -> dict[str, float]:
    """Each hop's milliseconds from one instance's stamps (s; a missing stamp: no entry)."""
    out: dict[str, float] = {}
    for hop, start, end in hops:
        if start in times and end in times:
            out[hop] = (times[end] - times[start]) * 1000
    if "start" in times and "seen" in times:
        out["total"] = (times["seen"] - times["start"]) * 1000
    return out


def summarize(
    samples: Sequence[dict[str, float]], hops: Sequence[tuple[str, str, str]] = HOPS
) -> dict[str, dict[str, float]]:
    """p50, p99 and mean of each hop over the instances (those with every stamp)."""
    complete = [s for s in samples if len(s) == len(hops) + 1]
    out: dict[str, dict[str, float]] = {}
    for hop in [h for h, _, _ in hops] + ["total"]:
        values = sorted(s[hop] for s in complete)
        if values:
            out[hop] = {
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "mean_ms": sum(values) / len(values),
            }
    out["instances"] = {"complete": len(complete), "run": len(samples)}
    return out


async def _instances(
    client: AsyncClient, stamps: _Stamps, n: int, drive: drivers.Drive
) -> list[dict[str, float]]:
    samples = []
    drive.progress.begin(f"{drive.label}W1 latency, hop by hop", n)

    async def run() -> None:
        for i in range(n):
            name = f"breakdown-{i}"
            stamps.reset()
            stamps.take("start")
            iid = await client.start_new(workloads.hello, name, instance_id=f"w1b-{i}")
            stamps.take("acked")
            output = await client.wait_for_completion(iid, timeout=None)
            stamps.take("seen")
            if output != workloads.expected_hello(name):
                raise BenchmarkError(f"breakdown: instance {iid} returned {output!r}")
            # The status view often sees the completion before commit_transaction has
            # returned (the markers are written before EndTxn's answer is back): the
            # processor's last stamps belong to this instance, not to the next one.
            waited = time.monotonic() + 1.0
            while "batch_end" not in stamps.times and time.monotonic() < waited:
                await asyncio.sleep(0.0005)
            samples.append(hop_durations(stamps.times))
            drive.progress.advance()

    await drive.guarded("W1 breakdown", run())
    drive.progress.end()
    return samples


def run_breakdown(
    config: BenchConfig, progress: Progress | None = None, *, floors: int = 300
) -> dict[str, Any]:
    """Run ``config.latency_n`` W1 instances one at a time and time each hop.

    Args:
        config: the benchmark's settings (Kafka; ``latency_n`` instances).
        progress: receives progress.
        floors: bare produces and transactions timed for the floors (0: none).

    Returns:
        ``hops`` (p50 / p99 / mean ms of each hop and the total), ``floors``
        (the bare Kafka operations' p50 / p99 ms) and ``settings``.
    """
    if config.transport != "kafka" or config.bootstrap is None:
        raise BenchmarkError("the breakdown measures the Kafka hops: use --transport kafka")
    if config.processes is ProcessMode.SEPARATE:
        hops = _run_separate(config, progress)
        return {
            "hops": hops,
            "floors": measure_floors(config.bootstrap, floors) if floors else {},
            "n": config.latency_n,
            "partitions": config.partitions,
            "layout": f"{config.processors} processor process(es) + 1 worker process",
        }
    stamps = _Stamps()
    with _bench_app(config) as (app, _):
        host = EmbeddedHost(app)
        with _instrumented(stamps, HubTopics(app.settings.task_hub).orchestrations):
            host.start()
            try:
                samples = asyncio.run(_measure(app, host, config, stamps, progress))
            finally:
                host.stop()
    return {
        "hops": summarize(samples),
        "floors": measure_floors(config.bootstrap, floors) if floors else {},
        "n": config.latency_n,
        "partitions": config.partitions,
        "layout": "one process",
    }


@contextlib.contextmanager
def _bench_app(config: BenchConfig) -> Iterator[tuple[App, Path]]:
    """An app on a fresh task hub with its topics, and a scratch directory; both go after."""
    assert config.bootstrap is not None
    hub = f"{config.hub_prefix}-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="durafka-bench-", dir=config.work_dir) as tmp:
        settings = config.settings_for(hub, config.bootstrap, Path(tmp) / "state")
        app = App(settings=settings)
        app.registry = workloads.app.registry
        try:
            app.ensure_topics()
            yield app, Path(tmp)
        finally:
            app.close()
            _drop_hub(settings, keep_topics=config.keep_topics)


def _run_separate(config: BenchConfig, progress: Progress | None) -> dict[str, dict[str, float]]:
    """The hops of W1 instances run one at a time through processor and worker processes."""
    with _bench_app(config) as (app, tmp):
        host = SeparateHost(app.settings, config.processors, tmp / "logs")
        host.start()
        try:
            seen = asyncio.run(_measure_separate(app, host, config, progress))
        except BenchmarkError as exc:
            raise BenchmarkError(f"{exc}\n{host.log_tails()}") from exc
        finally:
            host.stop()
        produced = _produced_at(app, set(seen))
    samples = [
        hop_durations({**produced.get(iid, {}), **times}, SEPARATE_HOPS)
        for iid, times in seen.items()
    ]
    return summarize(samples, SEPARATE_HOPS)


async def _measure_separate(
    app: App, host: SeparateHost, config: BenchConfig, progress: Progress | None
) -> dict[str, dict[str, float]]:
    """Each instance's wall-clock start and the time the client saw it complete (s)."""
    seen: dict[str, dict[str, float]] = {}
    async with AsyncClient(app.settings, app.registry) as client:
        drive = drivers.Drive(
            client, progress or NoProgress(), host.check, config.timeout, config.max_in_flight
        )
        await drivers.warm_up(drive, config.partitions, config.startup_timeout)
        drive.progress.begin(f"{drive.label}W1 latency, hop by hop", config.latency_n)

        async def run() -> None:
            for i in range(config.latency_n):
                name = f"breakdown-{i}"
                start = time.time()
                iid = await client.start_new(workloads.hello, name, instance_id=f"w1b-{i}")
                output = await client.wait_for_completion(iid, timeout=None)
                seen[iid] = {"start": start, "seen": time.time()}
                if output != workloads.expected_hello(name):
                    raise BenchmarkError(f"breakdown: instance {iid} returned {output!r}")
                drive.progress.advance()

        await drive.guarded("W1 breakdown", run())
        drive.progress.end()
    return seen


def _produced_at(app: App, ids: set[str]) -> dict[str, dict[str, float]]:
    """When each instance's task, result and completed status were produced (s).

    Read back from the topics (committed records only): Kafka keeps the time each
    record was produced, in ms, set by the producing client on this machine.
    """
    from durafka.codec.records import decode_activity_task, decode_message, decode_status
    from durafka.runtime.history import EventKind
    from durafka.status import RuntimeStatus

    topics = HubTopics(app.settings.task_hub)
    out: dict[str, dict[str, float]] = {iid: {} for iid in ids}
    for topic in (topics.activities, topics.orchestrations, topics.status):
        for record in _read_all(app, topic):
            value = record.value()
            if value is None:
                continue
            at = record.timestamp()[1] / 1000
            if topic == topics.activities:
                iid, stamp = decode_activity_task(value).instance_id, "task"
            elif topic == topics.status:
                status = decode_status(value)
                if status.runtime_status is not RuntimeStatus.COMPLETED:
                    continue
                iid, stamp = status.instance_id, "status"
            else:
                iid, event = decode_message(value)
                if event.kind is not EventKind.TASK_COMPLETED:
                    continue
                stamp = "result"
            if iid in out:
                out[iid].setdefault(stamp, at)
    return out


def _read_all(app: App, topic: str) -> list[Any]:
    """Every committed record of ``topic`` (read until a poll returns nothing)."""
    consumer = app.transport.consumer(None)
    try:
        partitions = app.transport.partition_count(topic)
        consumer.assign({TopicPartition(topic, p): 0 for p in range(partitions)})
        records: list[Any] = []
        while batch := consumer.poll_batch(1_000, 2.0):
            records.extend(batch)
        return records
    finally:
        consumer.close()


async def _measure(
    app: App, host: EmbeddedHost, config: BenchConfig, stamps: _Stamps, progress: Progress | None
) -> list[dict[str, float]]:
    async with AsyncClient(app.settings, app.registry) as client:
        drive = drivers.Drive(
            client, progress or NoProgress(), host.check, config.timeout, config.max_in_flight
        )
        await drivers.warm_up(drive, config.partitions, config.startup_timeout)
        stamps.active = True
        try:
            return await _instances(client, stamps, config.latency_n, drive)
        finally:
            stamps.active = False


def measure_floors(bootstrap: str, n: int) -> dict[str, dict[str, float]]:
    """The bare Kafka operations under the hops, ``n`` times each, on a scratch topic.

    ``produce + ack``: an idempotent, ``acks=all`` produce and its delivery report.
    ``txn 1p`` / ``txn 2p``: a transaction of one record to one / two partitions
    (begin, produce, flush, commit); ``+ offsets``: with ``send_offsets`` too,
    as a processor's commit does. Each gives p50 / p99 of its flush, offsets,
    commit and total.
    """
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"durafka-floor-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    common = {"bootstrap.servers": bootstrap, "socket.nagle.disable": True, "linger.ms": 0}
    out: dict[str, dict[str, float]] = {}
    try:
        producer = Producer({**common, "enable.idempotence": True, "acks": "all"})
        acked = threading.Event()
        times: list[float] = []
        for i in range(n + 10):
            acked.clear()
            t = time.perf_counter()
            producer.produce(topic, b"x", b"k", partition=0, on_delivery=lambda e, m: acked.set())
            while not acked.is_set():
                producer.poll(1)
            if i >= 10:
                times.append((time.perf_counter() - t) * 1000)
        out["produce + ack"] = _p(times)
        group = f"{topic}-group"
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            metadata = consumer.consumer_group_metadata()
            for partitions, offsets in ((1, False), (2, False), (2, True)):
                label = f"txn {partitions}p" + (" + offsets" if offsets else "")
                out.update(_transactions(common, topic, partitions, offsets, metadata, n, label))
            out["txn 2p + offsets: visible to read_committed"] = _visibility(
                common, topic, metadata, n
            )
        finally:
            consumer.close()
    finally:
        admin.delete_topics([topic])
    return out


def _transactions(
    common: dict[str, Any],
    topic: str,
    partitions: int,
    offsets: bool,
    metadata: Any,
    n: int,
    label: str,
) -> dict[str, dict[str, float]]:
    from confluent_kafka import Producer, TopicPartition

    producer = Producer({**common, "transactional.id": f"{topic}-{label}", "acks": "all"})
    producer.init_transactions(30)
    flush, send, commit, total = [], [], [], []
    for i in range(n + 10):
        t0 = time.perf_counter()
        producer.begin_transaction()
        for p in range(partitions):
            producer.produce(topic, b"x", b"k", partition=p)
        producer.flush(30)
        t1 = time.perf_counter()
        if offsets:
            producer.send_offsets_to_transaction([TopicPartition(topic, 0, i + 1)], metadata, 30)
        t2 = time.perf_counter()
        producer.commit_transaction(30)
        t3 = time.perf_counter()
        if i >= 10:
            flush.append((t1 - t0) * 1000)
            send.append((t2 - t1) * 1000)
            commit.append((t3 - t2) * 1000)
            total.append((t3 - t0) * 1000)
    result = {f"{label}: flush": _p(flush), f"{label}: end txn": _p(commit)}
    if offsets:
        result[f"{label}: send offsets"] = _p(send)
    result[f"{label}: total"] = _p(total)
    return result


def _visibility(common: dict[str, Any], topic: str, metadata: Any, n: int) -> dict[str, float]:
    """From ``begin_transaction`` to a read_committed consumer having the record.

    What a hop through a topic costs at the least: the transaction, then the
    markers, then the waiting fetch they answer (the worker's tasks, the
    processor's results, the client's status view).
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer(
        {
            **common,
            "group.id": f"{topic}-visibility",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    arrived: dict[bytes, float] = {}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            message = consumer.poll(0.1)
            value = None if message is None or message.error() else message.value()
            if value is not None:
                arrived[value] = time.perf_counter()

    reader = threading.Thread(target=read, name="durafka-floor-reader", daemon=True)
    reader.start()
    producer = Producer({**common, "transactional.id": f"{topic}-visibility", "acks": "all"})
    producer.init_transactions(30)
    times: list[float] = []
    try:
        for i in range(n + 10):
            mark = f"v{i}".encode()
            t0 = time.perf_counter()
            producer.begin_transaction()
            producer.produce(topic, mark, b"k", partition=0)
            producer.produce(topic, b"x", b"k", partition=1)
            producer.flush(30)
            producer.send_offsets_to_transaction([TopicPartition(topic, 1, i + 1)], metadata, 30)
            producer.commit_transaction(30)
            deadline = t0 + 5.0
            while mark not in arrived and time.perf_counter() < deadline:
                time.sleep(0.0002)
            if i >= 10 and mark in arrived:
                times.append((arrived[mark] - t0) * 1000)
    finally:
        done.set()
        reader.join(timeout=5)
        consumer.close()
    return _p(times)


def _p(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": percentile(ordered, 50), "p99_ms": percentile(ordered, 99)}
