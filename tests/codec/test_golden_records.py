"""Records written by durafka 0.1 (schemas v1, its own fingerprints) still decode.

``golden/v1/*.bin`` were written by the encoders of commit 3baced0, before
durafka switched to the Avro specification's fingerprints and added execution
ids; they stand for what production topics and changelogs hold today.
"""

from __future__ import annotations

from pathlib import Path

from durafka.codec import records
from durafka.errors import FailureDetails
from durafka.runtime.history import EventKind, IdReusePolicy
from durafka.status import RuntimeStatus

GOLDEN = Path(__file__).parent / "golden" / "v1"
FAILURE = FailureDetails("builtins.ValueError", "bad", "Traceback ...")


def read(name: str) -> bytes:
    return (GOLDEN / f"{name}.bin").read_bytes()


def test_a_start_message_of_0_1_decodes_with_defaults_for_the_new_fields() -> None:
    instance_id, event = records.decode_message(read("OrchestrationMessage"))
    assert instance_id == "i-1"
    assert (event.kind, event.name, event.payload) == (
        EventKind.EXECUTION_STARTED,
        "hello",
        b'"world"',
    )
    assert event.execution_id is None
    assert event.id_reuse_policy is IdReusePolicy.REJECT_DUPLICATE


def test_a_status_a_header_and_a_history_chunk_of_0_1_decode() -> None:
    status = records.decode_status(read("InstanceStatus"))
    assert (status.instance_id, status.runtime_status, status.failure_details) == (
        "i-1",
        RuntimeStatus.FAILED,
        FAILURE,
    )
    assert status.serialized_custom_status == b'{"step": 2}'
    assert status.execution_id is None
    state = records.decode_state(read("InstanceState"))
    assert (state.parent_seq, state.history_chunks, state.generation) == (4, 2, 1)
    assert state.status == status
    assert [e.kind for e in state.pending_events] == [EventKind.TASK_COMPLETED]
    chunk = records.decode_chunk(read("HistoryChunk"))
    assert [e.kind for e in chunk] == [
        EventKind.EXECUTION_STARTED,
        EventKind.TASK_COMPLETED,
        EventKind.TASK_FAILED,
    ]
    assert chunk[2].failure == FAILURE


def test_a_task_an_entity_and_a_dead_letter_of_0_1_decode() -> None:
    task = records.decode_activity_task(read("ActivityTask"))
    assert (task.instance_id, task.seq, task.name, task.execution_id) == (
        "i-1",
        3,
        "say_hello",
        None,
    )
    entity = records.decode_entity(read("EntityState"))
    assert (entity.name, entity.key, entity.state, entity.locked_by) == (
        "Counter",
        "a",
        b"5",
        "o-1",
    )
    assert entity.queue[0].instance_id == "o-2"
    dead = records.decode_dead_letter(read("DeadLetter"))
    assert (dead["reason"], dead["source_offset"]) == ("bad record", 41)
