"""The soak's plan and checks on made-up data: the same seed replays, each check can fail.

The soak passing means something only if its checks catch what they are
meant to catch; these tests feed each check the kind of evidence a broken
engine leaves behind (two terminal statuses, a re-run after the end, a lost
signal, a changed balance, a missing activity, a dead letter) and a correct
run, without a broker.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from durafka.codec.records import DeadLetter, encode_dead_letter
from durafka.entities import EntityId, EntityMetadata
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.transport.calls import InFlightCall
from tests.soak import app as soak
from tests.soak.checks import (
    ActivityRuns,
    StatusRecord,
    check_activities,
    check_dead_letters,
    check_entities,
    check_statuses,
    read_activity_runs,
)
from tests.soak.cluster import _STUCK_AT_STOP
from tests.soak.schedule import CI_SIZE, FaultKind, plan_soak
from tests.soak.workload import (
    ACCOUNTS,
    COUNTER_KEYS,
    INITIAL_BALANCE,
    Between,
    Exactly,
    Expectation,
    Kind,
    Ledger,
    WorkloadPlan,
)

# -- the plan -----------------------------------------------------------------------------


def test_the_same_seed_plans_the_same_soak() -> None:
    assert plan_soak(42, CI_SIZE) == plan_soak(42, CI_SIZE)
    assert plan_soak(42, CI_SIZE) != plan_soak(43, CI_SIZE)
    first, second = WorkloadPlan("42/group/workload", "g"), WorkloadPlan("42/group/workload", "g")
    assert [first.next() for _ in range(200)] == [second.next() for _ in range(200)]


def test_every_ci_plan_has_20_kill_cycles_broker_kills_and_both_layouts() -> None:
    for seed in range(200):
        plans = plan_soak(seed, CI_SIZE)
        assert [p.name for p in plans] == ["group", "static"]
        assert sum(p.kill_cycles for p in plans) >= 20, seed
        for plan in plans:
            kinds = Counter(f.kind for f in plan.faults)
            assert kinds[FaultKind.BROKER_KILL] >= 1, (seed, plan.name)
            assert kinds[FaultKind.BROKER_FREEZE] >= 1, (seed, plan.name)
        group, static = plans
        assert sum(r.role == "processor" for r in group.layout.roles) >= 2
        assert [r.partitions for r in static.layout.roles if r.role == "processor"] == [
            "0-3",
            "4-7",
        ]


def test_the_workload_mixes_every_kind() -> None:
    plan = WorkloadPlan("7/group/workload", "g")
    ledger = Ledger()
    for _ in range(500):
        ledger.record(plan.next())
    assert set(ledger.kinds()) == {k.value for k in Kind} - {Kind.CLIENT_SIGNALS.value}
    assert sum(ledger.counter_signals.values()) > 0


# -- statuses -----------------------------------------------------------------------------


def _status(iid: str, state: RuntimeStatus, output: object = None) -> OrchestrationStatus:
    payload = None if output is None else json.dumps(output).encode()
    return OrchestrationStatus(iid, "hello", state, None, payload, None, None, 0, 0)


def _records(iid: str, *states: tuple[RuntimeStatus, object]) -> list[StatusRecord]:
    return [StatusRecord(iid, None, _status(iid, s, out)) for s, out in states]


def _hello_ledger(*ids: str) -> Ledger:
    ledger = Ledger()
    for iid in ids:
        ledger.expectations[iid] = Expectation(iid, Kind.HELLO, Exactly("Hello, 1!"))
    return ledger


R, C = RuntimeStatus.RUNNING, RuntimeStatus.COMPLETED


def test_statuses_of_a_correct_run_pass_and_give_the_outputs() -> None:
    records = _records("a", (R, None), (C, "Hello, 1!")) + _records("b", (C, "Hello, 1!"))
    problems, outputs = check_statuses(records, _hello_ledger("a", "b"))
    assert problems == []
    assert outputs == {"a": "Hello, 1!", "b": "Hello, 1!"}


def test_statuses_catch_every_way_exactly_once_breaks() -> None:
    records = [
        *_records("twice", (R, None), (C, "Hello, 1!"), (C, "Hello, 1!")),
        *_records("rerun", (R, None), (C, "Hello, 1!"), (R, None)),
        *_records("wrong", (R, None), (C, "Hello, 2!")),
        *_records("stuck", (R, None)),
        *_records("failed", (R, None), (RuntimeStatus.FAILED, None)),
        *_records("stranger", (C, "Hello, 1!")),
    ]
    ledger = _hello_ledger("twice", "rerun", "wrong", "stuck", "failed", "missing")
    problems, outputs = check_statuses(records, ledger)
    text = "\n".join(problems)
    assert "never started: ['stranger']" in text
    assert "6 of 6 instances broke exactly-once" in text
    assert "twice (hello): 2 terminal statuses" in text
    assert "rerun (hello): status records after the terminal one" in text
    assert "wrong (hello): output 'Hello, 2!', expected 'Hello, 1!'" in text
    assert "stuck (hello): never ended" in text
    assert "failed (hello): ended FAILED" in text
    assert "missing (hello): no status record at all" in text
    assert outputs == {}


def test_statuses_are_grouped_by_execution_when_records_carry_one() -> None:
    done = _status("loop", C, 6)
    records = [
        StatusRecord("loop", "e1", _status("loop", R)),
        StatusRecord("loop", "e2", _status("loop", R)),
        StatusRecord("loop", "e2", done),
        StatusRecord("hello", "e1", _status("hello", C, "Hello, 1!")),
        StatusRecord("hello", "e2", _status("hello", C, "Hello, 1!")),
    ]
    ledger = _hello_ledger("hello")
    ledger.expectations["loop"] = Expectation("loop", Kind.LOOP, Exactly(6))
    problems, outputs = check_statuses(records, ledger)
    assert outputs == {"loop": 6}
    assert len(problems) == 1 and "hello (hello): 2 executions, expected one" in problems[0]
    assert "e1:COMPLETED" in problems[0]


# -- entities -----------------------------------------------------------------------------


def _entity(entity: EntityId, state: int, locked_by: str | None = None) -> EntityMetadata:
    return EntityMetadata(entity, state, str(state).encode(), 0, locked_by)


def _bank(balances: list[int], counters: dict[str, int]) -> dict[str, EntityMetadata | None]:
    out: dict[str, EntityMetadata | None] = {
        str(soak.account(i)): _entity(soak.account(i), b) for i, b in enumerate(balances)
    }
    for key, value in counters.items():
        out[str(soak.counter(key))] = _entity(soak.counter(key), value)
    return out


def _transfer_ledger() -> Ledger:
    ledger = Ledger()
    t = soak.Transfer(0, 1, 50)
    ledger.expectations["t"] = Expectation("t", Kind.TRANSFER, Between(0, 50), transfer=t)
    ledger.counter_signals.update({"c0": 7})
    return ledger


def test_entities_of_a_correct_run_pass() -> None:
    balances = [INITIAL_BALANCE] * ACCOUNTS
    balances[0] -= 30
    balances[1] += 30
    counters = {key: 7 if key == "c0" else 0 for key in COUNTER_KEYS}
    assert check_entities(_bank(balances, counters), _transfer_ledger(), {"t": 30}) == []


def test_entities_catch_lost_signals_moved_money_and_left_locks() -> None:
    balances = [INITIAL_BALANCE] * ACCOUNTS
    balances[0] -= 30
    balances[1] += 60  # the deposit applied twice
    entities = _bank(balances, {"c0": 6})
    entities[str(soak.account(2))] = _entity(soak.account(2), INITIAL_BALANCE, locked_by="t")
    problems = "\n".join(check_entities(entities, _transfer_ledger(), {"t": 30}))
    assert "counter c0 is 6, expected 7" in problems
    assert f"bank total is {ACCOUNTS * INITIAL_BALANCE + 30}" in problems
    assert "account 2 is still locked by 't'" in problems
    assert "1: (160, 130)" in problems


def test_a_counter_may_count_a_signal_retried_after_an_unknown_outcome_twice() -> None:
    ledger = _transfer_ledger()
    ledger.signals_in_doubt["c0"] = 1
    balances = [INITIAL_BALANCE] * ACCOUNTS
    balances[0] -= 30
    balances[1] += 30
    for c0, ok in ((7, True), (8, True), (9, False), (6, False)):
        problems = check_entities(_bank(balances, {"c0": c0}), ledger, {"t": 30})
        assert (problems == []) is ok, (c0, problems)


# -- activities and dead letters ------------------------------------------------------------


def test_activities_must_all_run_reruns_are_only_counted(tmp_path: Path) -> None:
    (tmp_path / "1.log").write_text("a/0\na/1\n")
    (tmp_path / "2.log").write_text("a/1\nz/9\n")
    runs = read_activity_runs(tmp_path)
    assert runs.processes == 2 and runs.runs == Counter({"a/0": 1, "a/1": 2, "z/9": 1})
    ledger = Ledger()
    ledger.expectations["a"] = Expectation("a", Kind.SEQUENCE, Exactly(0), ("a/0", "a/1", "a/2"))
    problems, summary = check_activities(runs, ledger)
    assert problems == [
        "1 of 3 activity calls never ran: ['a/2']",
        "1 activity calls ran that no instance made: ['z/9']",
    ]
    assert "1 calls ran more than once" in summary
    fixed = ActivityRuns(Counter({"a/0": 1, "a/1": 3, "a/2": 1}), 1)
    assert check_activities(fixed, ledger)[0] == []
    assert "at most 3 times" in check_activities(fixed, ledger)[1]


def test_any_dead_letter_is_a_problem() -> None:
    assert check_dead_letters([]) == []
    letter = encode_dead_letter(DeadLetter("undecodable", "H.orchestrations", 0, 5, b"k", b"x", 0))
    (problem,) = check_dead_letters([(b"k", letter)])
    assert problem.startswith("1 dead letters") and "undecodable" in problem


def test_a_between_output_is_checked_by_range() -> None:
    check = Between(0, 50)
    assert check.problem(50) is None
    assert check.problem(51) is not None and check.problem("5") is not None
    assert replace(Exactly(3), value=4).problem(4) is None


def test_a_role_stopped_late_in_a_stuck_kafka_call_is_a_note_not_a_problem() -> None:
    # Soak seed 397900: a worker stuck in librdkafka's send_offsets_to_transaction after
    # the broker restart got the final SIGTERM before the watchdog's bound and exited 1
    # after 25 s. The role names the stuck call now; anything else stays a problem.
    call = InFlightCall("send_offsets_to_transaction(H.worker.w)", "durafka-worker", 57.0, 35.0)
    stuck = (
        "worker did not stop within 25 s; exiting anyway (work not committed runs again)"
        f"; stuck in {call}"
    )
    assert _STUCK_AT_STOP.search(f"INFO x\nERROR {stuck}\n")
    assert not _STUCK_AT_STOP.search(
        "ERROR worker did not stop within 25 s; exiting anyway (work not committed runs again)\n"
    )
