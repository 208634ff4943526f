"""A dead letter always fits the producer's record size limit (issue 11, case 7)."""

from __future__ import annotations

import hashlib

import pytest

import durafka
from durafka.codec.records import decode_dead_letter
from durafka.deadletters import MAX_REASON_CHARS, MIN_RECORD_SIZE, DeadLetters
from durafka.errors import ConfigurationError
from durafka.partitioning import partition_for
from durafka.topology import HubTopics
from durafka.transport.limits import (
    DEFAULT_MESSAGE_MAX_BYTES,
    max_record_size,
    record_size,
)

LIMIT = DEFAULT_MESSAGE_MAX_BYTES


def letters(limit: int = LIMIT) -> DeadLetters:
    return DeadLetters(HubTopics("h"), 3, limit, "processor test")


def build(
    dead: DeadLetters,
    *,
    key: bytes | None = b"k",
    value: bytes | None = b"v",
    headers: list[tuple[str, bytes | None]] | None = None,
    reason: str = "undecodable",
) -> tuple[bytes | None, dict[str, object], int]:
    topic, partition, out_key, encoded, _ = dead.build(
        reason,
        topic="h.orchestrations",
        partition=2,
        offset=17,
        key=key,
        value=value,
        headers=headers,
        timestamp=1234,
        now_ms=5678,
    )
    assert topic == "h.dead-letters"
    assert record_size(out_key, encoded) <= dead.max_size
    return out_key, decode_dead_letter(encoded), partition


def test_a_small_record_is_kept_whole_with_everything_known_about_it() -> None:
    key, letter, partition = build(letters(), headers=[("trace", b"t"), ("none", None)])
    assert key == b"k"
    assert partition == partition_for(b"k", 3)
    assert letter == {
        "reason": "undecodable",
        "source_topic": "h.orchestrations",
        "source_partition": 2,
        "source_offset": 17,
        "key": b"k",
        "value": b"v",
        "failed_at": 5678,
        "headers": [{"key": "trace", "value": b"t"}, {"key": "none", "value": None}],
        "source_timestamp": 1234,
        "key_size": 1,
        "value_size": 1,
        "value_sha256": hashlib.sha256(b"v").digest(),
        "truncated": [],
        "durafka_version": durafka.__version__,
        "written_by": "processor test",
    }


def test_a_value_that_fit_its_topic_is_cut_to_fit_the_dead_letter() -> None:
    # Fits a producer with a 1 MiB limit, not the dead letter's 1,000,000 bytes.
    value = bytes(range(256)) * 3906
    _, letter, _ = build(letters(), value=value, headers=[("h", b"x" * 100)])
    assert letter["truncated"] == ["value"]
    assert value.startswith(letter["value"])  # type: ignore[arg-type]
    assert len(letter["value"]) > LIMIT - 1000  # type: ignore[arg-type]
    assert letter["value_size"] == len(value)
    assert letter["value_sha256"] == hashlib.sha256(value).digest()
    assert letter["headers"] == [{"key": "h", "value": b"x" * 100}]


def test_huge_headers_are_dropped_after_the_value() -> None:
    # A record of other services that just fits: headers and all.
    headers = [("big", b"h" * 600_000), ("bigger", b"h" * 399_880)]
    value = b"v" * 20
    assert record_size(b"k", value, headers) <= LIMIT
    _, letter, _ = build(letters(), value=value, headers=headers)
    assert letter["truncated"] == ["value", "headers"]
    assert letter["headers"] == []


def test_a_huge_key_is_cut_last_and_the_letter_still_fits() -> None:
    key = b"k" * 900_000
    out_key, letter, partition = build(letters(), key=key, value=b"v" * 50_000)
    assert letter["truncated"] == ["value", "key"]
    assert out_key == letter["key"] and key.startswith(out_key or b"x")
    assert letter["key_size"] == len(key)
    assert partition == partition_for(key, 3)  # where the whole key's letters go


def test_a_long_reason_is_cut() -> None:
    _, letter, _ = build(letters(), reason="r" * 10_000)
    assert len(letter["reason"]) <= MAX_REASON_CHARS + 3  # type: ignore[arg-type]
    assert letter["truncated"] == ["reason"]


def test_records_without_key_or_value() -> None:
    key, letter, partition = build(letters(), key=None, value=None)
    assert key is None and partition == 2  # the source partition, modulo 3
    assert (letter["key_size"], letter["value_size"], letter["value_sha256"]) == (None, None, None)


def test_the_limit_follows_producer_and_topic_configs() -> None:
    assert max_record_size({}) == LIMIT
    assert max_record_size({"message.max.bytes": "2000000"}) == 1_048_588 - 61
    assert max_record_size({}, {"max.message.bytes": "500000"}) == 500_000 - 61
    with pytest.raises(ConfigurationError, match="too small"):
        letters(MIN_RECORD_SIZE - 1)
    value = b"x" * 100_000
    _, letter, _ = build(letters(MIN_RECORD_SIZE), value=value, headers=[("h", b"y" * 20_000)])
    assert letter["value_size"] == len(value)
