"""The soak's end checks, each a pure comparison that returns its problems as lines.

What is compared is what the outside world sees, read after the roles stopped:

* :func:`check_statuses`: the whole ``H.status`` topic, read_committed from the
  beginning: exactly one terminal status per instance (and per execution, when
  status records carry an ``execution_id``), nothing after it, Completed with
  the expected output;
* :func:`check_entities`: counters equal to the signals sent, every account's
  balance equal to what the completed transfers moved, the bank total constant;
* :func:`check_activities`: every activity call ran, none that was not made;
  calls that ran more than once are counted (at-least-once), not failed;
* :func:`check_dead_letters`: ``H.dead-letters`` is empty.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durafka.codec.records import decode_dead_letter, decode_status
from durafka.entities import EntityMetadata
from durafka.status import OrchestrationStatus, RuntimeStatus
from tests.soak import app as soak
from tests.soak.workload import ACCOUNTS, COUNTER_KEYS, INITIAL_BALANCE, Kind, Ledger

__all__ = [
    "ActivityRuns",
    "StatusRecord",
    "check_activities",
    "check_dead_letters",
    "check_entities",
    "check_statuses",
    "read_activity_runs",
    "status_records",
]

#: Kinds whose instance runs several executions (one per ``continue_as_new`` generation).
_MULTI_EXECUTION = frozenset({Kind.LOOP, Kind.TIMEOUT_LOOP})
#: Problems listed per check at most (the count is always given).
_SHOWN = 15


@dataclass(frozen=True)
class StatusRecord:
    """One record of ``H.status``: the instance and execution it is about, the status."""

    instance_id: str
    execution_id: str | None
    status: OrchestrationStatus | None  # None: a tombstone

    def label(self) -> str:
        """``RUNNING`` or, with execution ids, ``<execution>:RUNNING``."""
        state = "tombstone" if self.status is None else self.status.runtime_status.value
        return state if self.execution_id is None else f"{self.execution_id}:{state}"


def status_records(raw: Iterable[tuple[bytes | None, bytes | None]]) -> list[StatusRecord]:
    """Decode ``H.status`` records (in topic order)."""
    out: list[StatusRecord] = []
    for key, value in raw:
        iid = (key or b"").decode()
        if value is None:
            out.append(StatusRecord(iid, None, None))
            continue
        st = decode_status(value)
        # Status records get an execution id (issue 10); until then, one group per instance.
        execution = getattr(st, "execution_id", None)
        out.append(StatusRecord(st.instance_id, None if execution is None else str(execution), st))
    return out


def check_statuses(records: list[StatusRecord], ledger: Ledger) -> tuple[list[str], dict[str, Any]]:
    """Exactly one terminal status per instance and execution, Completed with the right output.

    Returns:
        The problems, and the output of every instance that completed once.
    """
    problems: list[str] = []
    by_instance: dict[str, list[StatusRecord]] = {}
    for r in records:
        by_instance.setdefault(r.instance_id, []).append(r)
    unexpected = sorted(set(by_instance) - set(ledger.expectations))
    if unexpected:
        problems.append(
            f"{len(unexpected)} instances have statuses but were never started: "
            f"{unexpected[:_SHOWN]}"
        )
    outputs: dict[str, Any] = {}
    per_instance: list[str] = []
    for iid, expectation in sorted(ledger.expectations.items()):
        found = by_instance.get(iid, [])
        problem, output = _check_instance(iid, expectation.kind, found)
        if problem is None:
            problem = expectation.output.problem(output)
            if problem is None:
                outputs[iid] = output
        if problem is not None:
            per_instance.append(f"{iid} ({expectation.kind.value}): {problem}")
    if per_instance:
        problems.append(
            f"{len(per_instance)} of {len(ledger.expectations)} instances broke exactly-once:\n  "
            + "\n  ".join(per_instance[:_SHOWN])
        )
    return problems, outputs


def _check_instance(iid: str, kind: Kind, found: list[StatusRecord]) -> tuple[str | None, Any]:
    """Why the status records of one instance are wrong (None: right), and its output."""
    if not found:
        return "no status record at all", None
    labels = [r.label() for r in found]
    if any(r.status is None for r in found):
        return f"a tombstone although nothing is purged: {labels}", None
    executions = list(dict.fromkeys(r.execution_id for r in found))
    if len(executions) > 1 and kind not in _MULTI_EXECUTION:
        return f"{len(executions)} executions, expected one: {labels}", None
    terminal = [i for i, r in enumerate(found) if r.status is not None and r.status.is_terminal]
    per_execution = Counter(found[i].execution_id for i in terminal)
    twice = [e for e, n in per_execution.items() if n > 1 and e is not None]
    if twice:
        return f"executions {twice} ended more than once: {labels}", None
    if not terminal:
        return f"never ended: {labels[-5:]}", None
    if len(terminal) > 1:
        return f"{len(terminal)} terminal statuses: {labels}", None
    end = terminal[0]
    if end != len(found) - 1:
        return f"status records after the terminal one: {labels}", None
    st = found[end].status
    assert st is not None
    if st.runtime_status is not RuntimeStatus.COMPLETED:
        details = st.failure_details
        why = f"{details.error_type}: {details.message}" if details else st.serialized_output
        return f"ended {st.runtime_status.value}: {why!r}", None
    return None, json.loads(st.serialized_output or b"null")


def check_entities(
    entities: Mapping[str, EntityMetadata | None], ledger: Ledger, outputs: Mapping[str, Any]
) -> list[str]:
    """Counters exact, every balance what the completed transfers moved, the total constant.

    Args:
        entities: entity id (``str(EntityId)``) -> what the client reads of it.
        ledger: the signals and transfers that were started.
        outputs: the output of every instance that completed once.
    """
    problems: list[str] = []
    for key in COUNTER_KEYS:
        found = entities.get(str(soak.counter(key)))
        value = found.state if found is not None else 0
        expected = ledger.counter_signals[key]
        doubt = ledger.signals_in_doubt[key]
        if not expected <= value <= expected + doubt:
            also = f" (+ up to {doubt} retried after an unknown outcome)" if doubt else ""
            problems.append(f"counter {key} is {value}, expected {expected} (signals sent){also}")
    expected_balance = dict.fromkeys(range(ACCOUNTS), INITIAL_BALANCE)
    unknown = 0
    for iid, expectation in ledger.expectations.items():
        t = expectation.transfer
        if t is None:
            continue
        if iid not in outputs:
            unknown += 1
            continue
        expected_balance[t.source] -= outputs[iid]
        expected_balance[t.target] += outputs[iid]
    balances: dict[int, Any] = {}
    for i in range(ACCOUNTS):
        found = entities.get(str(soak.account(i)))
        balances[i] = found.state if found is not None else None
        if found is not None and (found.locked_by is not None or found.queued):
            problems.append(
                f"account {i} is still locked by {found.locked_by!r} with {found.queued} "
                "operations queued after every instance ended"
            )
    total = sum(b for b in balances.values() if isinstance(b, int))
    if total != ACCOUNTS * INITIAL_BALANCE:
        problems.append(f"the bank total is {total}, expected {ACCOUNTS * INITIAL_BALANCE}")
    if unknown:
        problems.append(f"{unknown} transfers did not complete: balances cannot be checked")
    else:
        wrong = {i: (balances[i], b) for i, b in expected_balance.items() if balances[i] != b}
        if wrong:
            problems.append(
                "account balances differ from what the completed transfers moved "
                f"(account: (balance, expected)): {wrong}"
            )
    return problems


@dataclass
class ActivityRuns:
    """How often each activity call ran, from the marker files of every process.

    Attributes:
        runs: tag -> executions.
        processes: marker files read (one per process that ran activities).
    """

    runs: Counter[str] = field(default_factory=Counter)
    processes: int = 0


def read_activity_runs(marker_dir: Path) -> ActivityRuns:
    """Count the activity executions recorded under ``marker_dir``."""
    result = ActivityRuns()
    for path in sorted(marker_dir.glob("*.log")):
        result.processes += 1
        result.runs.update(line for line in path.read_text().splitlines() if line)
    return result


def check_activities(runs: ActivityRuns, ledger: Ledger) -> tuple[list[str], str]:
    """Every activity call of the ledger ran, no other; returns the problems and a summary.

    Calls that ran more than once are allowed (at-least-once) and reported in
    the summary; so are calls made with a timeout that expired before any
    worker took them (a worker does not start a task past its timeout).
    """
    expected = ledger.activity_tags()
    timed = ledger.timed_activity_tags()
    ran = set(runs.runs)
    problems: list[str] = []
    missing = sorted(expected - ran)
    if missing:
        problems.append(
            f"{len(missing)} of {len(expected)} activity calls never ran: {missing[:_SHOWN]}"
        )
    unexpected = sorted(ran - expected - timed)
    if unexpected:
        problems.append(
            f"{len(unexpected)} activity calls ran that no instance made: {unexpected[:_SHOWN]}"
        )
    again = {tag: n for tag, n in runs.runs.items() if n > 1}
    executions = sum(runs.runs.values())
    expired = len(timed - ran)
    summary = (
        f"{executions} activity executions by {runs.processes} processes for "
        f"{len(expected)} calls and {len(timed)} calls with a timeout ({expired} expired "
        f"unrun); {len(again)} calls ran more than once"
    )
    if again:
        most = sorted(again.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        summary += f" (at most {most[0][1]} times; e.g. {most})"
    return problems, summary


def check_dead_letters(raw: list[tuple[bytes | None, bytes | None]]) -> list[str]:
    """Nothing may be in ``H.dead-letters``."""
    if not raw:
        return []
    reasons = []
    for key, value in raw[:_SHOWN]:
        reason = decode_dead_letter(value)["reason"] if value is not None else "tombstone"
        reasons.append(f"{key!r}: {reason}")
    return [f"{len(raw)} dead letters:\n  " + "\n  ".join(reasons)]
