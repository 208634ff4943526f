"""Dead letters: records nothing can use, kept on ``H.dead-letters`` with all there is to know.

The processor and the worker send a record there when they cannot apply it: it
does not decode, its instance id breaks the id rules, its key is not its
instance id, a changelog record's key is malformed, ... A dead letter
(:class:`~durafka.codec.records.DeadLetter`) carries the original key, value and
headers, where the record came from (topic, partition, offset, timestamp), when
and why it failed, and which durafka version and which process wrote it.

A dead letter always fits the producer's record size limit. It is produced in
the batch's transaction, so one that does not fit fails the transaction, and
the batch with it, every time it is retried: a value just under Kafka's limit,
copied whole into a dead letter with fields of its own, did exactly that. So
the value is cut to what fits (``value_size`` and ``value_sha256`` describe the
original), then, if that is not enough, the headers are dropped and the key is
cut; ``truncated`` says what was cut.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Final

from durafka.codec.records import DeadLetter, encode_dead_letter
from durafka.errors import ConfigurationError
from durafka.partitioning import partition_for
from durafka.settings import Settings
from durafka.topology import HubTopics
from durafka.transport.base import OutgoingRecord, Record, RecordHeaders, header_pairs
from durafka.transport.client_config import for_client
from durafka.transport.limits import RecordLimits, record_size
from durafka.version import __version__

__all__ = ["MAX_REASON_CHARS", "MIN_RECORD_SIZE", "DeadLetters", "fit"]

log = logging.getLogger("durafka.deadletters")

#: The longest reason kept (longer ones are cut, and ``truncated`` lists ``reason``).
MAX_REASON_CHARS: Final = 2000
#: The smallest record size limit a dead letter is guaranteed to fit.
MIN_RECORD_SIZE: Final = 16_384
# Room for the Avro length prefixes that shrink or grow as a field is cut.
_LENGTH_SLACK: Final = 16


class DeadLetters:
    """Builds the dead letters of one processor or worker, and counts them.

    Args:
        topics: the task hub's topic names.
        partitions: partitions of ``H.dead-letters``.
        max_size: the record size limit of the producer (see
            :func:`durafka.transport.limits.max_record_size`).
        written_by: who writes them: ``processor <id>`` or ``worker <id>``.

    Attributes:
        count: dead letters built so far (a batch that is rolled back and
            processed again builds its dead letters again).
        by_reason: the same, by source topic and kind of reason (the ``cause``
            given to :meth:`build`, e.g. the exception's type name).

    Raises:
        ConfigurationError: ``max_size`` is below :data:`MIN_RECORD_SIZE`.
    """

    def __init__(self, topics: HubTopics, partitions: int, max_size: int, written_by: str) -> None:
        if max_size < MIN_RECORD_SIZE:
            raise ConfigurationError(
                f"the producer's record size limit ({max_size} bytes: message.max.bytes, or "
                f"the max.message.bytes of {topics.dead_letters}) is below {MIN_RECORD_SIZE}, "
                "too small for dead letters; raise it"
            )
        self.topic = topics.dead_letters
        self._partitions = partitions
        self.max_size = max_size
        self.written_by = written_by
        self.count = 0
        self.by_reason: Counter[tuple[str, str]] = Counter()

    @classmethod
    def for_settings(cls, settings: Settings, partitions: int, written_by: str) -> DeadLetters:
        """Dead letters within the limit of ``settings``' producers and the topology's topic."""
        topics = HubTopics(settings.task_hub)
        limits = RecordLimits.for_hub(
            settings.task_hub, for_client(settings.client_config, "producer")
        )
        return cls(topics, partitions, limits.of(topics.dead_letters), written_by)

    def of_record(
        self, record: Record, reason: str, now_ms: int, *, cause: str = "other"
    ) -> OutgoingRecord:
        """The dead letter of a consumed ``record`` (``cause``: see :meth:`build`)."""
        kind, timestamp = record.timestamp()
        offset = record.offset()
        return self.build(
            reason,
            cause=cause,
            topic=record.topic() or "",
            partition=record.partition() or 0,
            offset=-1 if offset is None else offset,
            key=record.key(),
            value=record.value(),
            headers=record.headers(),
            timestamp=timestamp if kind else None,
            now_ms=now_ms,
        )

    def build(
        self,
        reason: str,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        now_ms: int,
        headers: RecordHeaders = None,
        timestamp: int | None = None,
        cause: str = "other",
    ) -> OutgoingRecord:
        """The dead letter of a record, cut to fit (see the module docstring).

        ``cause`` is a short, bounded kind of ``reason`` (e.g. ``DecodeError``): the
        ``reason`` label of the ``durafka_dead_letters_total`` metric.
        """
        log.warning("dead-lettering %s[%d]@%d (key %r): %s", topic, partition, offset, key, reason)
        truncated: list[str] = []
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + "..."
            truncated.append("reason")
        letter = DeadLetter(
            reason=reason,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            key=key,
            value=value,
            failed_at=now_ms,
            headers=header_pairs(headers),
            source_timestamp=timestamp,
            key_size=None if key is None else len(key),
            value_size=None if value is None else len(value),
            value_sha256=None if value is None else hashlib.sha256(value).digest(),
            truncated=truncated,
            durafka_version=__version__,
            written_by=self.written_by,
        )
        encoded = fit(letter, self.max_size)
        self.count += 1
        self.by_reason[(topic, cause)] += 1
        target = partition_for(key, self._partitions) if key is not None else partition
        return OutgoingRecord(self.topic, target % self._partitions, letter.key, encoded)


def fit(letter: DeadLetter, max_size: int) -> bytes:
    """Encode ``letter``, cutting its value, then headers, then key until the record fits.

    The record's key is ``letter.key`` (as cut). Returns the encoded value.
    """
    encoded = encode_dead_letter(letter)
    for cut in ("value", "headers", "key"):
        if record_size(letter.key, encoded) <= max_size:
            return encoded
        if cut == "headers":
            if letter.headers:
                letter.headers = []
                letter.truncated.append(cut)
            encoded = encode_dead_letter(letter)
            continue
        original: bytes | None = getattr(letter, cut)
        if not original:
            continue
        setattr(letter, cut, b"")
        without = record_size(letter.key, encode_dead_letter(letter))
        room = max_size - without - _LENGTH_SLACK
        # The record carries the key twice: as its key and inside the value.
        keep = max(0, room // 2 if cut == "key" else room)
        setattr(letter, cut, original[:keep])
        letter.truncated.append(cut)
        encoded = encode_dead_letter(letter)
    if record_size(letter.key, encoded) > max_size:  # only below MIN_RECORD_SIZE
        raise ConfigurationError(
            f"a dead letter of {record_size(letter.key, encoded)} bytes does not fit the "
            f"record size limit of {max_size} bytes even with value, headers and key cut"
        )
    return encoded
