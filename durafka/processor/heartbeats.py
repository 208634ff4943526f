"""Activity heartbeats in the processor: one durable timer per running activity, reset lazily.

A call with ``heartbeat_timeout`` expects a ``TASK_HEARTBEAT`` from the worker
when the activity starts and then at least every timeout (the worker sends at
most one per half timeout, whatever the activity calls). Keeping that cheap:

* a heartbeat is never appended to a history and never loads the instance: it
  only updates, in memory, when the task was last heard of;
* the first heartbeat of a task stores one timer (``t/<due>/<id>\\0<-2-seq>``:
  negative sequence ids never collide with the orchestrator's timers) whose
  value says it is a heartbeat timer (its timeout, execution, activity name).
  Later heartbeats write nothing;
* when the timer comes due, the processor looks at the last heartbeat: newer
  than a timeout ago, it stores the timer again at last heartbeat + timeout
  (one changelog record per timeout, not per heartbeat); else it hands the
  instance a ``TASK_FAILED`` with ``ActivityTimeoutError`` ("no heartbeat
  within ..."), which the engine treats as any failure of that attempt: the
  retry policy retries it, and a late result is dropped as not awaited.

The last-heartbeat times live in memory only. A processor that takes a
partition over (or rolls a batch back) does not know them: a heartbeat timer
firing without a known heartbeat is stored again for one more timeout, as if
heard of at that moment, and a heartbeat arriving meanwhile arms a timer of its
own (the other one, no longer the task's, is dropped when it fires). So a
failover costs a hung activity at most one extra timeout, never a false alarm.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from durafka.errors import ActivityTimeoutError, FailureDetails
from durafka.processor.batch import PartitionBatch
from durafka.runtime.history import EventKind, HistoryEvent
from durafka.state.keys import timer_key

__all__ = ["HEARTBEAT_TIMER_MARK", "Heartbeats"]

log = logging.getLogger("durafka.processor")

#: The value of a heartbeat timer starts with this (an orchestrator timer holds an
#: execution token, which never starts with a control character).
HEARTBEAT_TIMER_MARK = b"\x01hb"
#: How much of the last heartbeat's details a timeout message quotes.
_QUOTED = 200


@dataclass(slots=True)
class _Beat:
    last_ms: int
    due_ms: int  # the one timer this task has in the store
    details: str | None = None  # of the last heartbeat that had some, cut for messages


def heartbeat_timer_seq(seq: int) -> int:
    """The sequence id of the heartbeat timer of the activity call ``seq``."""
    return -2 - seq


class Heartbeats:
    """Last heartbeats of the running activities of the owned partitions, and their timers."""

    def __init__(self) -> None:
        # partition -> (instance, execution token, call seq) -> last heartbeat
        self._beats: dict[int, dict[tuple[str, str | None, int], _Beat]] = {}
        #: Activity attempts failed for want of a heartbeat.
        self.timeouts = 0

    def beat(self, share: PartitionBatch, instance_id: str, event: HistoryEvent) -> None:
        """A ``TASK_HEARTBEAT`` for ``instance_id``: note it; the first one stores a timer."""
        timeout = event.heartbeat_timeout_ms
        if timeout is None or timeout <= 0 or event.seq < 0:
            log.debug("dropped a heartbeat without a timeout for %r", instance_id)
            return
        key = (instance_id, event.execution_id, event.seq)
        beats = self._beats.setdefault(share.number, {})
        now = share.now_ms
        details = (
            None if event.payload is None else event.payload.decode(errors="replace")[:_QUOTED]
        )
        beat = beats.get(key)
        if beat is None:
            info: dict[str, object] = {
                "t": timeout,
                "x": event.execution_id,
                "n": event.name,
                "a": event.attempt,
            }
            beat = beats[key] = self._arm(share, instance_id, event.seq, now, now + timeout, info)
        beat.last_ms = max(beat.last_ms, now)
        if details is not None:
            beat.details = details

    def completed(self, share: PartitionBatch, instance_id: str, event: HistoryEvent) -> None:
        """A result of an activity (``TASK_COMPLETED`` / ``TASK_FAILED``): its heartbeat
        timer, if it has one, is deleted (it would only fire to be dropped)."""
        beats = self._beats.get(share.number)
        if not beats:
            return
        beat = beats.pop((instance_id, event.execution_id, event.seq), None)
        if beat is not None:
            share.tx.delete(timer_key(beat.due_ms, instance_id, heartbeat_timer_seq(event.seq)))

    def fired(
        self, share: PartitionBatch, instance_id: str, timer_seq: int, due_ms: int, value: bytes
    ) -> None:
        """A heartbeat timer came due (its key is deleted already): store it again, or
        fail the attempt with ``ActivityTimeoutError``."""
        seq = -2 - timer_seq
        try:
            info = json.loads(value[len(HEARTBEAT_TIMER_MARK) :])
            timeout = int(info["t"])
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed heartbeat timer of %r: %r", instance_id, value)
            return
        token = info.get("x")
        key = (instance_id, token, seq)
        beats = self._beats.setdefault(share.number, {})
        beat = beats.get(key)
        now = share.now_ms
        if beat is None:
            # Taken over or rolled back: the last heartbeat is unknown. One more
            # timeout, as if heard of now.
            beats[key] = self._arm(share, instance_id, seq, now, now + timeout, info)
            return
        if beat.due_ms != due_ms:
            return  # a timer this task no longer uses (see the module docstring)
        if beat.last_ms + timeout > now:
            again = self._arm(share, instance_id, seq, beat.last_ms, beat.last_ms + timeout, info)
            again.details = beat.details
            beats[key] = again
            return
        del beats[key]
        self.timeouts += 1
        within = timedelta(milliseconds=timeout)
        message = f"activity {info.get('n')!r} sent no heartbeat within {within}"
        if beat.details is not None:
            message += f" (last details: {beat.details})"
        share.add(
            instance_id,
            HistoryEvent(
                EventKind.TASK_FAILED,
                now,
                seq=seq,
                attempt=int(info.get("a") or 0),
                failure=FailureDetails(
                    f"{ActivityTimeoutError.__module__}.{ActivityTimeoutError.__qualname__}",
                    message,
                ),
                execution_id=token,
            ),
        )

    def forget(self, partitions: set[int] | list[int]) -> None:
        """Drop what is known of ``partitions`` (revoked, rolled back, restored)."""
        for p in partitions:
            self._beats.pop(p, None)

    @staticmethod
    def _arm(
        share: PartitionBatch,
        instance_id: str,
        seq: int,
        last_ms: int,
        due_ms: int,
        info: dict[str, object],
    ) -> _Beat:
        """Store the task's heartbeat timer at ``due_ms``; ``info`` is what it carries."""
        value = HEARTBEAT_TIMER_MARK + json.dumps(info, separators=(",", ":")).encode()
        share.tx.put(timer_key(due_ms, instance_id, heartbeat_timer_seq(seq)), value)
        share.timer_stored(due_ms)
        return _Beat(last_ms, due_ms)
