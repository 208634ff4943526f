"""``durafka replay-check``: would the current code fail any live instance?

Every running instance's history is in ``H.state-changelog``; this reads them
straight from there, a partition at a time (:func:`durafka.client.changelog.read_instances`:
memory holds one partition's live state, never the whole topic), and replays
each against the app's current code with the pure executor: the orchestrator
runs, nothing else does (no activity, no write, no message). An instance
*would fail* when its replay diverges from its history (``NonDeterminismError``:
the recorded and the new call, the sequence id, the place in the code), or when
the code fails where the history did not (an orchestration or version no longer
registered, an input that no longer decodes, an exception on the replayed path).

The report groups failures by orchestration, version and code location, so one
incompatible change shows as one group however many instances it breaks. Use it
as a pre-deploy gate: ``durafka replay-check new_code:app`` exits 1 when any
instance would fail (README, "Changing running code").
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from durafka.client.changelog import StoredInstance, read_instances
from durafka.codec.payload import DEFAULT_MAX_PAYLOAD_BYTES
from durafka.codec.records import InstanceState
from durafka.management.models import (
    ReplayCheckReport,
    ReplayFailure,
    ReplayFailureGroup,
    iso,
)
from durafka.registry import Registry
from durafka.runtime.executor import OrchestrationExecutor
from durafka.runtime.history import EventKind
from durafka.status import ACTIVE_STATUSES
from durafka.topology import HubTopics
from durafka.transport.base import Transport

__all__ = ["InstanceFailure", "ReplayCheckProgress", "check_instance", "replay_check"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


@dataclass(slots=True)
class ReplayCheckProgress:
    """Where a check is, for a progress bar.

    Attributes:
        partitions: changelog partitions in all.
        partitions_done: partitions read and checked.
        partition: the partition being read (-1: none yet).
        records: records read in the current partition.
        offsets: offsets to read in the current partition.
        checked: histories replayed so far.
        would_fail: of which the current code would fail.
    """

    partitions: int
    partitions_done: int = 0
    partition: int = -1
    records: int = 0
    offsets: int = 0
    checked: int = 0
    would_fail: int = 0


@dataclass(slots=True)
class InstanceFailure:
    """What the current code would fail on one instance, and where in that code."""

    orchestration: str
    version: str | None
    location: str | None
    error_type: str
    failure: ReplayFailure


def check_instance(
    registry: Registry,
    inst: StoredInstance,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> InstanceFailure | None:
    """Replay one stored instance against ``registry``'s code; what fails, or None."""
    history = inst.history
    start = next((e for e in history if e.kind is EventKind.EXECUTION_STARTED), None)
    state = inst.state
    name = start.name if start is not None and start.name else (state.status.name if state else "")
    executor = OrchestrationExecutor(
        registry,
        inst.instance_id,
        name,
        max_payload_bytes=max_payload_bytes,
        generation=state.generation if state is not None else 0,
    )
    executor.replay(history)
    version = start.version if start is not None else None
    status = state.status.runtime_status if state is not None else None
    divergence = executor.divergence
    if divergence is not None:
        return InstanceFailure(
            name,
            version,
            divergence.location,
            type(divergence).__name__,
            ReplayFailure(
                instance_id=inst.instance_id,
                status=status,
                seq=divergence.seq,
                recorded=divergence.recorded,
                new=divergence.taken,
                message=str(divergence),
            ),
        )
    completion = executor.completion
    if completion is None or completion.kind is not EventKind.EXECUTION_FAILED:
        return None
    if any(e.kind is EventKind.EXECUTION_FAILED for e in history):
        return None  # it failed before, and fails the same way: nothing new
    failure = completion.failure
    assert failure is not None
    return InstanceFailure(
        name,
        version,
        _user_frame(failure.stack_trace),
        failure.error_type,
        ReplayFailure(
            instance_id=inst.instance_id,
            status=status,
            message=f"{failure.error_type}: {failure.message}",
        ),
    )


def _user_frame(stack_trace: str | None) -> str | None:
    """The innermost ``file:line in function`` of a traceback outside durafka."""
    where = None
    for path, line, function in _FRAME.findall(stack_trace or ""):
        if not path.startswith(_PACKAGE_DIR):
            where = f"{path}:{line} in {function}"
    return where


def replay_check(
    transport: Transport,
    topics: HubTopics,
    registry: Registry,
    *,
    finished_since_ms: int | None = None,
    partitions: Sequence[int] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_listed: int = 100,
    on_progress: Callable[[ReplayCheckProgress], None] | None = None,
) -> ReplayCheckReport:
    """Replay the history of every running instance against ``registry``'s code.

    Args:
        transport: the task hub's transport.
        topics: the task hub's topics.
        registry: the code to check (the app about to be deployed).
        finished_since_ms: also check instances that finished at or after this time.
        partitions: only these changelog partitions (default: all).
        max_payload_bytes: the app's payload limit (the executor checks it).
        max_listed: instances listed per group at most (the count is always exact).
        on_progress: called after each batch of records and each partition.

    Returns:
        The report; ``would_fail`` is 0 when every instance replays.
    """
    began = time.monotonic()
    count = transport.partition_count(topics.changelog)
    numbers = list(range(count)) if partitions is None else list(partitions)
    progress = ReplayCheckProgress(len(numbers))
    groups: dict[tuple[str, str | None, str | None, str], ReplayFailureGroup] = {}
    records = 0

    def keep(state: InstanceState) -> bool:
        status = state.status
        if status.runtime_status in ACTIVE_STATUSES:
            return True
        return finished_since_ms is not None and status.last_updated_at_ms >= finished_since_ms

    def on_batch(read: int, offsets: int) -> None:
        progress.records, progress.offsets = read, offsets
        if on_progress is not None:
            on_progress(progress)

    for number in numbers:
        progress.partition, progress.records, progress.offsets = number, 0, 0
        found = read_instances(transport, topics, number, keep=keep, on_batch=on_batch)
        records += progress.records
        for failure in _check_all(registry, found, max_payload_bytes, progress, on_progress):
            key = (failure.orchestration, failure.version, failure.location, failure.error_type)
            group = groups.get(key)
            if group is None:
                group = groups[key] = ReplayFailureGroup(
                    orchestration=failure.orchestration,
                    version=failure.version,
                    location=failure.location,
                    error_type=failure.error_type,
                    count=0,
                    instances=[],
                )
            group.count += 1
            if len(group.instances) < max_listed:
                group.instances.append(failure.failure)
        progress.partitions_done += 1
        if on_progress is not None:
            on_progress(progress)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.orchestration, g.location or ""))
    return ReplayCheckReport(
        checked=progress.checked,
        would_fail=progress.would_fail,
        partitions=len(numbers),
        records=records,
        seconds=round(time.monotonic() - began, 3),
        finished_since=iso(finished_since_ms),
        groups=ordered,
    )


def _check_all(
    registry: Registry,
    found: Iterable[StoredInstance],
    max_payload_bytes: int,
    progress: ReplayCheckProgress,
    on_progress: Callable[[ReplayCheckProgress], None] | None,
) -> Iterable[InstanceFailure]:
    for n, inst in enumerate(found, 1):
        if inst.error is None and (not inst.history or inst.state is None):
            continue  # nothing recorded yet (a start not applied), or a header compacted away
        progress.checked += 1
        failure = (
            _undecodable(inst)
            if inst.error is not None
            else check_instance(registry, inst, max_payload_bytes=max_payload_bytes)
        )
        if failure is not None:
            progress.would_fail += 1
            yield failure
        if on_progress is not None and n % 1000 == 0:
            on_progress(progress)


def _undecodable(inst: StoredInstance) -> InstanceFailure:
    """An instance whose records do not decode: it cannot be checked (nor run)."""
    state = inst.state
    return InstanceFailure(
        state.status.name if state is not None else "(unknown)",
        None,
        None,
        "DecodeError",
        ReplayFailure(
            instance_id=inst.instance_id,
            status=state.status.runtime_status if state is not None else None,
            message=f"its records in the changelog do not decode: {inst.error}",
        ),
    )
