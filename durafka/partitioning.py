"""Kafka-compatible key partitioning: the Java client's murmur2.

durafka computes the partition of every record itself and passes it on each
produce, because clients disagree on their default partitioner (librdkafka's
is CRC32-based, not murmur2). The functions here reproduce
``org.apache.kafka.common.utils.Utils.murmur2`` and the Java producer's
``toPositive(murmur2(key)) % numPartitions``, so records land exactly where a
Java producer (Kafka Streams, Kafka Connect, ...) would put the same key.
"""

from __future__ import annotations

import struct

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF
# Explicit little-endian, as Java assembles each 4-byte block low byte first;
# a native ``memoryview.cast("I")`` would be wrong on big-endian machines.
_iter_blocks = struct.Struct("<I").iter_unpack


def _murmur2_unsigned(data: bytes) -> int:
    """Java's ``Utils.murmur2`` as an unsigned 32-bit value."""
    length = len(data)
    m = _M
    mask = _MASK32
    h = _SEED ^ length
    tail = length & ~3
    for (k,) in _iter_blocks(memoryview(data)[:tail]):
        k = (k * m) & mask
        k ^= k >> 24
        # (h * m) ^ (k * m), masked once: XOR commutes with truncation.
        h = ((h * m) ^ (k * m)) & mask
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def murmur2(data: bytes) -> int:
    """Hash ``data`` exactly like Kafka's Java ``Utils.murmur2``.

    Args:
        data: the serialized record key.

    Returns:
        The hash as a signed 32-bit integer, the value Java returns.
    """
    h = _murmur2_unsigned(data)
    return h - 0x1_0000_0000 if h & 0x8000_0000 else h


def partition_for(key: bytes, n: int) -> int:
    """The partition the Java producer's default partitioner picks for ``key``.

    ``Utils.toPositive(Utils.murmur2(key)) % n``, where ``toPositive`` masks the
    sign bit (it is not ``abs``).

    Args:
        key: the serialized record key (for durafka: the instance id bytes).
        n: the topic's partition count, at least 1.

    Returns:
        A partition number in ``range(n)``.

    Raises:
        ValueError: if ``n`` is less than 1.
    """
    if n < 1:
        raise ValueError(f"partition count must be at least 1, got {n}")
    return (_murmur2_unsigned(key) & 0x7FFF_FFFF) % n
