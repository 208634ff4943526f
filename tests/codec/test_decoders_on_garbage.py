"""Decoders meet garbage: they return a record or raise DecodeError, nothing else.

The processor and the worker dead-letter a record whose value raises
``DecodeError``; any other exception escaping a decoder would be taken for a bug
and kill the loop (issue 11, case 11 found such inputs by fuzzing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durafka.codec.avro import MARKER, codec
from durafka.codec.records import (
    ActivityTask,
    decode_activity_task,
    decode_chunk,
    decode_entity,
    decode_message,
    decode_state,
    encode_activity_task,
    encode_message,
)
from durafka.errors import DecodeError
from durafka.runtime.history import EventKind, HistoryEvent

DECODERS: dict[str, tuple[str, Callable[[bytes], Any]]] = {
    "message": ("OrchestrationMessage", decode_message),
    "task": ("ActivityTask", decode_activity_task),
    "state": ("InstanceState", decode_state),
    "chunk": ("HistoryChunk", decode_chunk),
    "entity": ("EntityState", decode_entity),
}

VALID = [
    encode_message(
        "order-1", HistoryEvent(EventKind.EXECUTION_STARTED, 1, name="wf", payload=b"1")
    ),
    encode_activity_task(ActivityTask("order-1", 3, 1, "charge", b'"x"', 5, "e:0")),
]


def garbage(schema: str) -> st.SearchStrategy[bytes]:
    """Random bytes; random bodies behind the right header; valid records cut or bent."""
    header = MARKER + codec(schema).fingerprint.to_bytes(8, "little")
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda body: header + body),
        st.sampled_from(VALID).flatmap(lambda v: st.integers(0, len(v) - 1).map(lambda k: v[:k])),
        st.tuples(
            st.sampled_from(VALID), st.integers(10, 60), st.binary(min_size=1, max_size=8)
        ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]),
    )


@pytest.mark.parametrize("name", list(DECODERS))
def test_a_decoder_returns_or_raises_decode_error(name: str) -> None:
    schema, decode = DECODERS[name]

    @settings(max_examples=400, deadline=None, database=None)
    @given(garbage(schema))
    def check(value: bytes) -> None:
        with contextlib.suppress(DecodeError):  # anything else fails the test
            decode(value)

    check()
