"""``partition_for`` is the Java producer's default key placement.

Reference vectors: Apache Kafka's own ``UtilsTest.testMurmur2``
(clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java in
apache/kafka), which pins ``Utils.murmur2`` — the hash behind the Java
producer's ``partitionForKey = toPositive(murmur2(key)) % numPartitions``.
Beyond the vectors, the placement is checked against two independent
implementations on the real broker: librdkafka's ``murmur2`` partitioner and
the stock Java ``KafkaProducer`` itself.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import Producer
from hypothesis import given
from hypothesis import strategies as st

from durafka.dev.broker import ensure_distribution
from durafka.partitioning import murmur2, partition_for
from tests.support.kafka import create_topic

# UtilsTest.testMurmur2: key bytes -> signed 32-bit hash.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def _keys(count: int, seed: int) -> list[bytes]:
    """Keys of every length 0..40 and tail size, text and binary."""
    rng = random.Random(seed)
    keys = [b"", b"\x00", b"\xff\xfe\xfd", "instance-é".encode()]
    keys += [rng.randbytes(rng.randrange(0, 41)) for _ in range(count // 2)]
    keys += [f"order-{rng.randrange(10**9)}".encode() for _ in range(count - len(keys))]
    return keys


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_kafka_utils_test_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS.items())
def test_partition_masks_the_sign_bit_not_abs(key: bytes, expected: int) -> None:
    for n in (1, 3, 12, 50, 1000):
        # toPositive(h) = h & 0x7fffffff; abs() would differ for every negative vector.
        assert partition_for(key, n) == (expected & 0x7FFFFFFF) % n


def test_partition_for_rejects_a_non_positive_count() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_for(b"k", 0)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=10_000))
def test_partition_for_agrees_with_librdkafka_murmur2(key: bytes, n: int) -> None:
    # confluent_kafka.murmur2 is librdkafka's Java-compatible partitioner, in C.
    assert partition_for(key, n) == confluent_kafka.murmur2(key, n)


def test_librdkafka_murmur2_producer_lands_where_partition_for_says(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, f"t{os.urandom(4).hex()}.placement", partitions=7)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2"})
    landed: dict[bytes, int] = {}

    def record(err: object, msg: confluent_kafka.Message) -> None:
        key, partition = msg.key(), msg.partition()
        assert err is None and key is not None and partition is not None, err
        landed[key] = partition

    keys = _keys(60, seed=7)
    for key in keys:
        producer.produce(topic, key=key, value=b"v", on_delivery=record)  # no partition given
    assert producer.flush(30) == 0
    assert landed == {key: partition_for(key, 7) for key in keys}
    assert len(set(landed.values())) > 1, "all keys on one partition proves nothing"


def test_java_default_partitioner_lands_where_partition_for_says(kafka_bootstrap: str) -> None:
    java = shutil.which("java")
    assert java is not None, "Java 17 is needed to run the reference Java producer"
    libs = ensure_distribution()  # the broker's own jars hold kafka-clients
    topic = create_topic(kafka_bootstrap, f"t{os.urandom(4).hex()}.java-placement", partitions=7)
    keys = _keys(30, seed=11)
    source = Path(__file__).parent.parent / "support" / "JavaKeyedProducer.java"
    done = subprocess.run(
        [java, "-cp", f"{libs}/*", str(source), kafka_bootstrap, topic, *(k.hex() for k in keys)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    landed = {
        bytes.fromhex(parts[1]): int(parts[2])
        for parts in (line.split(" ") for line in done.stdout.splitlines())
        if parts[0] == "PARTITION"
    }
    assert landed == {key: partition_for(key, 7) for key in keys}
