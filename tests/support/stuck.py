"""A librdkafka ``send_offsets_to_transaction`` that does not return, on demand.

After the broker was unreachable, librdkafka 2.16's ``send_offsets_to_transaction``
was seen blocking for good (librdkafka issues 5456 and 5511). The hang cannot be
produced at will, so tests wrap a durafka producer's confluent-kafka client in
:class:`BlockingSendOffsets` and report the trouble as librdkafka does
(:func:`a_broker_went_down`).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from durafka.transport import kafka as kafka_transport
from durafka.transport.kafka import KafkaTransactionalProducer, KafkaTransport

__all__ = ["BlockingSendOffsets", "a_broker_went_down", "short_send_offsets_bound"]


class BlockingSendOffsets:
    """confluent-kafka's producer, except that ``send_offsets_to_transaction`` blocks
    until :attr:`release` is set, noting the thread of each call."""

    def __init__(self, inner: Any, *, time_out_first: bool = False) -> None:
        self._inner = inner
        self._time_out_first = time_out_first
        self.release = threading.Event()
        self.threads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.threads.append(threading.current_thread().name)
        if self._time_out_first and len(self.threads) == 1:
            # As librdkafka reports a request the broker did not answer (it went down).
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Timed out", retriable=True))
        self.release.wait()

    @classmethod
    def wrap(cls, producer: object, *, time_out_first: bool = False) -> BlockingSendOffsets:
        """Put one around ``producer``'s client; returns it.

        ``time_out_first``: the first call fails with a retriable timeout at once,
        and the retry blocks (as seen in the soak, the error callback not served yet).
        """
        assert isinstance(producer, KafkaTransactionalProducer)
        blocking = cls(producer._producer, time_out_first=time_out_first)
        producer._producer = blocking
        return blocking


def a_broker_went_down(transport: object) -> None:
    """What librdkafka's error callback reports to ``transport``'s clients when the broker goes."""
    assert isinstance(transport, KafkaTransport)
    transport._errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))


def short_send_offsets_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """``send_offsets`` gets 1 s and 0.5 s of slack instead of 30 s and 5 s."""
    monkeypatch.setattr(kafka_transport, "_SEND_OFFSETS_TIMEOUT_S", 1.0)
    monkeypatch.setattr(kafka_transport, "_SLACK_S", 0.5)
