"""Orchestration statistics streamed from ``H.status``, with confluent-kafka and fastavro only.

Another team's analytics job: it knows durafka only through docs/topics.md and
``schemas/standalone/InstanceStatus.avsc`` (no ``import durafka``). It reads the
compacted status topic from the beginning with ``isolation.level=read_committed``,
keeps the latest status of each instance (a compacted topic holds several records
per key until the broker compacts it; a null value means the instance was purged),
and reports per orchestration name the instances in each runtime status and the
p50 and p99 of the durations of finished ones::

    python examples/analytics/status_stats.py --bootstrap 127.0.0.1:9092 --hub parcels
    python examples/analytics/status_stats.py ... --follow    # a new report every 10 s
    python examples/analytics/status_stats.py ... --json      # one JSON object, then exit
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "standalone" / "InstanceStatus.avsc"
TERMINAL = frozenset({"COMPLETED", "FAILED", "TERMINATED"})


class StatusDecoder:
    """Avro single-object encoding of ``InstanceStatus``: C3 01, fingerprint, body."""

    def __init__(self, schema_file: Path) -> None:
        self.schema = parse_schema(json.loads(schema_file.read_text()))
        canonical = to_parsing_canonical_form(self.schema)
        # CRC-64-AVRO of the Parsing Canonical Form; fastavro gives its 8 bytes in the
        # little-endian order the header holds them.
        self.header = b"\xc3\x01" + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))

    def decode(self, value: bytes) -> dict[str, Any] | None:
        """The status record, or None if it was written with another schema version."""
        if value[:10] != self.header:
            return None
        return schemaless_reader(io.BytesIO(value[10:]), self.schema)


class StatusStats:
    """The latest status per instance and the statistics over them."""

    def __init__(self) -> None:
        self.latest: dict[bytes, dict[str, Any]] = {}
        self.unreadable = 0

    def apply(self, key: bytes, status: dict[str, Any] | None) -> None:
        """One record of ``H.status`` in topic order (None: a tombstone, purged)."""
        if status is None:
            self.latest.pop(key, None)
        else:
            self.latest[key] = status

    def report(self) -> dict[str, Any]:
        """``{name: {"statuses": {status: count}, "p50_ms": .., "p99_ms": .., "finished": n}}``."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        durations: dict[str, list[int]] = defaultdict(list)
        for s in self.latest.values():
            counts[s["name"]][s["runtime_status"]] += 1
            if s["runtime_status"] in TERMINAL:
                durations[s["name"]].append(s["last_updated_at"] - s["created_at"])
        return {
            name: {
                "statuses": dict(sorted(counts[name].items())),
                "finished": len(durations[name]),
                "p50_ms": percentile(durations[name], 50),
                "p99_ms": percentile(durations[name], 99),
            }
            for name in sorted(counts)
        }


def percentile(values: list[int], p: float) -> float | None:
    """The ``p``-th percentile, interpolated between the closest ranks (as numpy and
    DuckDB's ``quantile_cont``); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stream(
    bootstrap: str, hub: str, decoder: StatusDecoder, follow: bool, every: float
) -> StatusStats:
    """Read ``<hub>.status`` from the beginning; stop at its end unless ``follow``."""
    topic = f"{hub}.status"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"status-stats-{uuid.uuid4().hex[:8]}",  # assign() commits nothing
            "enable.auto.commit": False,
            # Processors write statuses in transactions: never count an aborted one.
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    stats = StatusStats()
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise SystemExit(f"cannot read {topic}: {metadata.error}")
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        next_report = time.monotonic() + every
        while follow or len(at_end) < len(partitions):
            for record in consumer.consume(500, timeout=0.5):
                error = record.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(record.partition())
                        continue
                    raise SystemExit(f"reading {topic}: {error}")
                value = record.value()
                status = None if value is None else decoder.decode(value)
                if value is not None and status is None:
                    stats.unreadable += 1
                    continue
                stats.apply(record.key() or b"", status)
            if follow and time.monotonic() >= next_report:
                print_report(stats)
                next_report = time.monotonic() + every
    finally:
        consumer.close()
    return stats


def print_report(stats: StatusStats) -> None:
    """The report as a table on stdout."""
    print(f"{'orchestration':<24} {'status':<12} {'count':>7} {'p50 ms':>9} {'p99 ms':>9}")
    for name, entry in stats.report().items():
        p50 = "-" if entry["p50_ms"] is None else f"{entry['p50_ms']:.0f}"
        p99 = "-" if entry["p99_ms"] is None else f"{entry['p99_ms']:.0f}"
        for i, (status, count) in enumerate(entry["statuses"].items()):
            cells = (p50, p99) if i == 0 else ("", "")
            print(
                f"{name if i == 0 else '':<24} {status:<12} {count:>7} {cells[0]:>9} {cells[1]:>9}"
            )
    if stats.unreadable:
        print(f"({stats.unreadable} records of another schema version skipped)")
    sys.stdout.flush()


def main() -> None:
    """Parse the command line, stream, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--hub", default="durafka", help="the task hub (topic prefix)")
    parser.add_argument("--schema", type=Path, default=SCHEMA, help="InstanceStatus.avsc")
    parser.add_argument("--follow", action="store_true", help="keep reading, report periodically")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    stats = stream(args.bootstrap, args.hub, StatusDecoder(args.schema), args.follow, args.every)
    if args.json:
        print(json.dumps({"orchestrations": stats.report(), "unreadable": stats.unreadable}))
    else:
        print_report(stats)


if __name__ == "__main__":
    main()
