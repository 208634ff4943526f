"""Quarantine: an instance whose stored state does not decode is failed, not crash-looped.

A corrupt header or history chunk (a bug, a disk, another program writing into
``H.state-changelog``) used to make loading the instance raise; failing it
"internally" loaded it again and raised again, the processor thread died, and the
next processor to take the partition restored the same value and died too. Now
such an instance is *quarantined*, in the batch that meets it:

* its stored values (header and every history chunk) are dead-lettered as they
  are (source: the changelog, offset -1) and deleted;
* it gets a new header that says FAILED, with ``InstanceQuarantinedError`` and the
  reason as its failure: the status a header that cannot be read still allows
  (what the old header said is kept when only a chunk was corrupt: name, input,
  parent, execution); the status is published, a parent is told;
* the records of the batch that were sent to it are dead-lettered.

From then on it is a FAILED instance like any other: late events are dropped, a
start follows its id reuse policy, a purge removes it. ``durafka dead-letters
quarantined`` lists them. What the lost history held is not undone: an entity
lock it held stays held (release it by hand), its timers fire and are dropped.

A value written by a *newer* durafka release is not corrupt: the processor stops
the partition instead (:class:`~durafka.errors.UpgradeRequiredError`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from durafka.codec.records import InstanceState, decode_state
from durafka.errors import FailureDetails, InstanceQuarantinedError
from durafka.processor.instances import StoredValueError
from durafka.state.keys import history_prefix, instance_key
from durafka.state.transaction import StoreTransaction
from durafka.status import OrchestrationStatus, RuntimeStatus

__all__ = ["QUARANTINE_ERROR_TYPE", "Quarantine", "quarantine"]

#: The ``error_type`` of a quarantined instance's failure details.
QUARANTINE_ERROR_TYPE = (
    f"{InstanceQuarantinedError.__module__}.{InstanceQuarantinedError.__qualname__}"
)


@dataclass(slots=True)
class Quarantine:
    """What quarantining one instance writes.

    Attributes:
        state: its new header (FAILED, with the reason).
        stored: every stored value of the instance, ``(key, value)``: to dead-letter
            and delete.
        reason: why, for dead letters and logs.
    """

    state: InstanceState
    stored: list[tuple[bytes, bytes]]
    reason: str


def quarantine(
    tx: StoreTransaction, instance_id: str, error: StoredValueError, now_ms: int
) -> Quarantine:
    """The quarantine of ``instance_id``, whose stored value ``error.key`` does not decode."""
    header_key = instance_key(instance_id)
    header = tx.get(header_key)
    stored = [] if header is None else [(header_key, header)]
    stored.extend(tx.iter_prefix(history_prefix(instance_id)))
    reason = (
        f"instance {instance_id!r} is quarantined: {error}. Its stored values are on the "
        "dead-letter topic (source: the changelog, offset -1)"
    )
    failure = FailureDetails(QUARANTINE_ERROR_TYPE, reason)
    try:
        old = decode_state(header) if header is not None and error.key != header_key else None
    except Exception:  # the header is not what failed, yet it may be no better
        old = None
    if old is None:
        status = OrchestrationStatus(
            instance_id, "", RuntimeStatus.FAILED, None, None, failure, None, now_ms, now_ms
        )
        state = InstanceState(status)
    else:
        status = replace(
            old.status,
            runtime_status=RuntimeStatus.FAILED,
            failure_details=failure,
            last_updated_at_ms=now_ms,
        )
        state = InstanceState(
            status,
            parent_seq=old.parent_seq,
            generation=old.generation,
            parent_execution_id=old.parent_execution_id,
        )
    return Quarantine(state, stored, reason)
