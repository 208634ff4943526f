"""One soak run: a broker of its own, then each phase of the plan, then the verdict.

A phase (:class:`PhaseRun`) runs on a task hub of its own: it starts the
layout's role processes, deposits the bank's money, starts the workload
(:class:`~tests.soak.feeder.Feeder`) and runs the phase's faults one after the
other, restarting anything that died on its own (a problem). Then it stops
starting, waits for every instance to end, stops the roles cleanly (SIGTERM)
and runs every check of :mod:`tests.soak.checks` and :mod:`tests.soak.stores`.
Every problem names the seed and the phase; :func:`run_soak` collects them in
a :class:`~tests.soak.report.SoakReport`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import durafka
from durafka.client import Client
from durafka.entities import EntityMetadata
from durafka.topology import HubTopics
from tests.soak import app as soak
from tests.soak.checks import (
    check_activities,
    check_dead_letters,
    check_entities,
    check_statuses,
    read_activity_runs,
    status_records,
)
from tests.soak.cluster import RoleSet, SoakBroker
from tests.soak.feeder import Feeder
from tests.soak.report import PhaseReport, SoakReport
from tests.soak.schedule import Fault, FaultKind, PhasePlan, SoakSize, plan_soak
from tests.soak.stores import check_restored_stores
from tests.soak.workload import ACCOUNTS, COUNTER_KEYS, INITIAL_BALANCE, Ledger, WorkloadPlan
from tests.support.apps import make_app
from tests.support.processes import RoleLauncher
from tests.support.topics import read_topic

__all__ = ["PhaseRun", "SoakLog", "run_soak"]

#: Log lines of the role processes worth counting in the report (label -> pattern).
_NOTABLE = {
    "batches failed and reprocessed": r"batch failed, reprocessing it",
    "aborts that failed": r"aborting the transaction failed",
    "internal errors": r"internal error processing instance",
    "roles stopped with an error": r"stopped with an error",
    "dead letters written": r"dead-lettering",
    "partitions restored": r"partition \d+ ready",
}


class SoakLog:
    """Timestamped progress lines, printed and kept in ``soak.log`` of the run's directory."""

    def __init__(self, seed: int, path: Path, out: TextIO | None = None) -> None:
        self._seed = seed
        self._began = time.monotonic()
        self._file = path.open("a")
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        text = f"[soak seed={self._seed} +{time.monotonic() - self._began:6.1f}s] {line}"
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()
            if self._out is not None:
                print(text, file=self._out, flush=True)

    def close(self) -> None:
        """Close the log file."""
        self._file.close()


def run_soak(
    seed: int, size: SoakSize, work_dir: Path, *, replay: str, out: TextIO | None = None
) -> SoakReport:
    """Run every phase of the seed's plan against a broker of the soak's own.

    Args:
        seed: decides the workload and the faults.
        size: how long, how fast.
        work_dir: an empty directory for the broker, the state dirs and the logs.
        replay: the command that runs this soak again (quoted in failures).
        out: where progress lines are printed as well (None: only ``soak.log``).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log = SoakLog(seed, work_dir / "soak.log", out)
    report = SoakReport(seed, replay)
    plans = plan_soak(seed, size)
    log(f"seed {seed}; replay with: {replay}; work dir {work_dir}")
    for plan in plans:
        log(plan.describe())
    broker = SoakBroker(work_dir / "kafka")
    try:
        with _client_log(work_dir / "client.log"):
            log(f"broker up at {broker.start()} (pid {broker.pid})")
            for plan in plans:
                phase = PhaseRun(plan, size, broker, work_dir / plan.name, log)
                report.phases.append(phase.run())
                log(report.phases[-1].summary())
    finally:
        broker.stop()
        log.close()
    return report


@contextlib.contextmanager
def _client_log(path: Path) -> Iterator[None]:
    """Send durafka's log lines of this process to ``path`` only, for the ``with`` block.

    The soak's client sees the broker die on purpose; its hundreds of
    "broker down" warnings belong in a file, not in the progress output.
    """
    logger = logging.getLogger("durafka")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]
        handler.close()


class PhaseRun:
    """One phase: roles, workload, faults, drain, clean stop, checks.

    Args:
        plan: the phase's layout and faults.
        size: rates and timeouts.
        broker: the soak's broker.
        root: the phase's directory.
        log: the soak's log.
    """

    def __init__(
        self,
        plan: PhasePlan,
        size: SoakSize,
        broker: SoakBroker,
        root: Path,
        log: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.size = size
        self.broker = broker
        self.root = root
        self._log = log
        self.hub = f"soak-{plan.name}"
        self.report = PhaseReport(plan.name, self.hub)
        self.ledger = Ledger()
        self.marker_dir = root / "markers"
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.broker_up = threading.Event()
        self.broker_up.set()
        self.launcher = RoleLauncher(root / "logs")
        self.roles = RoleSet(
            plan.layout,
            self.launcher,
            bootstrap=broker.bootstrap,
            hub=self.hub,
            partitions=size.partitions,
            root=root,
            marker_dir=self.marker_dir,
        )

    def log(self, line: str) -> None:
        """A line of the soak's log, naming the phase."""
        self._log(f"{self.plan.name}: {line}")

    def run(self) -> PhaseReport:
        """Run the phase and check it; the report lists every problem found."""
        began = time.monotonic()
        app = make_app(
            self.broker.bootstrap,
            self.hub,
            self.root / "client-state",
            soak.app.registry,
            partitions=self.size.partitions,
            # librdkafka's own lines (the broker is killed on purpose) would flood the
            # output; its errors still reach the durafka logger, hence client.log.
            client_config={"log_level": "0"},
        )
        try:
            app.ensure_topics()
            self.roles.start_all()
            self.roles.wait_for_log(r"partition \d+ ready", role="processor", timeout=120)
            with app.sync_client() as client:
                self._open_accounts(client)
                feeder = Feeder(
                    client,
                    WorkloadPlan(self.plan.workload_seed, self.plan.name),
                    self.size.starts_per_second,
                    self.ledger,
                    self.broker_up,
                    self.log,
                )
                feeder.start()
                try:
                    for fault in self.plan.faults:
                        self._pause(fault.after, feeder)
                        self._inject(fault)
                finally:
                    feeder.finish()
                self.log(f"chaos over: {feeder.written} starts written; draining")
                self._drain(client)
                self.log("stopping the roles (SIGTERM)")
                problems, notes = self.roles.stop_all()
                self.report.problems += problems
                self.report.notes += notes
                self.log("every role stopped")
                self._check(app, client)
        finally:
            self.launcher.stop_all()
            app.close()
        self.report.notes.append(self._role_log_counts())
        self.report.started = self.ledger.kinds()
        self.report.seconds = time.monotonic() - began
        return self.report

    # -- before the chaos --------------------------------------------------------------------

    def _open_accounts(self, client: Client) -> None:
        """Deposit the bank's money and wait until every account holds it."""
        for i in range(ACCOUNTS):
            client.signal_entity(soak.account(i), "deposit", INITIAL_BALANCE)
        deadline = time.monotonic() + 120
        for i in range(ACCOUNTS):
            while (found := client.get_entity(soak.account(i))) is None or (
                found.state != INITIAL_BALANCE
            ):
                self._watch_roles()
                if time.monotonic() > deadline:
                    raise AssertionError(f"account {i} did not receive its deposit: {found}")
                time.sleep(0.05)

    # -- the chaos ---------------------------------------------------------------------------

    def _pause(self, seconds: float, feeder: Feeder) -> None:
        """Wait ``seconds`` while the workload runs, watching the roles and the feeder."""
        deadline = time.monotonic() + seconds
        while True:
            feeder.check()
            self._watch_roles()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(0.1, remaining))

    def _inject(self, fault: Fault) -> None:
        if fault.kind is FaultKind.KILL:
            killed = [self.roles.kill(name) for name in fault.targets]
            pids = ", ".join(f"{p.name} (pid {p.pid})" for p in killed)
            self.log(f"kill -9 {pids}; restart in {fault.down_for}s")
            time.sleep(fault.down_for)
            for name, wipe in zip(fault.targets, fault.wipe, strict=True):
                started = self.roles.start(name, wipe=wipe)
                state = "a wiped" if wipe else "the same"
                self.log(
                    f"restarted {name} as {started.name} (pid {started.pid}) on {state} state dir"
                )
            self.report.kill_cycles += 1
        elif fault.kind is FaultKind.PAUSE:
            paused = self.roles.process(fault.targets[0])
            self.log(f"pausing {paused.name} (SIGSTOP pid {paused.pid}) for {fault.down_for}s")
            paused.pause()
            try:
                time.sleep(fault.down_for)
            finally:
                paused.resume()
            self.log(f"{paused.name} resumed (SIGCONT)")
            self.report.pauses += 1
        elif fault.kind is FaultKind.BROKER_KILL:
            self.broker_up.clear()
            self.log(f"kill -9 the broker (pid {self.broker.pid})")
            self.broker.kill()
            time.sleep(fault.down_for)
            began = time.monotonic()
            self.broker.restart()
            self.broker_up.set()
            self.log(f"broker restarted (pid {self.broker.pid}) in {time.monotonic() - began:.1f}s")
            self.report.broker_kills += 1
        else:
            self.log(f"freezing the broker (SIGSTOP pid {self.broker.pid}) for {fault.down_for}s")
            self.broker.freeze()
            try:
                time.sleep(fault.down_for)
            finally:
                self.broker.thaw()
            self.log("broker thawed (SIGCONT)")
            self.report.freezes += 1

    def _watch_roles(self) -> None:
        """Restart a role that exited on its own, as a supervisor would, and note why.

        A role may exit non-zero on a fatal error (e.g. its producer fenced after a
        pause or a broker outage longer than the transaction timeout) and rely on
        being restarted; that is reported, not failed. What it leaves behind is
        checked like everything else.
        """
        for dead in self.roles.died_on_their_own():
            name = dead.name.removeprefix(f"{self.hub}-").rsplit(".", 1)[0]
            why = _last_error(dead.log_text())
            self.report.exits.append(f"{dead.name} ({dead.returncode}): {why}")
            started = self.roles.start(name)
            self.log(
                f"{dead.name} exited on its own ({dead.returncode}: {why}); "
                f"restarted as {started.name}"
            )

    # -- after the chaos ---------------------------------------------------------------------

    def _drain(self, client: Client) -> None:
        """Wait until every instance started has ended and the entities have settled."""
        view = client.status_view
        deadline = time.monotonic() + self.size.drain_timeout
        waiting = list(self.ledger.expectations)
        while waiting:
            waiting = [
                iid for iid in waiting if (st := view.get(iid)) is None or not st.is_terminal
            ]
            if not waiting:
                break
            self._watch_roles()
            if time.monotonic() > deadline:
                shown = [(iid, _status_label(view.get(iid))) for iid in waiting[:15]]
                stacks = "\n".join(
                    f"--- {name}:\n{frames}" for name, frames in self.roles.stacks().items()
                )
                self.report.problems.append(
                    f"{len(waiting)} instances had not ended {self.size.drain_timeout:.0f}s "
                    f"after the chaos: {shown}\nwhere the roles were then:\n{stacks}"
                )
                return
            time.sleep(0.2)
        self.log("every instance ended; waiting for the entities to settle")
        deadline = time.monotonic() + 60
        while not self._entities_settled(client) and time.monotonic() < deadline:
            self._watch_roles()
            time.sleep(0.2)

    def _entities_settled(self, client: Client) -> bool:
        for key in COUNTER_KEYS:
            found = client.get_entity(soak.counter(key))
            if (found.state if found else 0) < self.ledger.counter_signals[key]:
                return False
        for i in range(ACCOUNTS):
            found = client.get_entity(soak.account(i))
            if found is None or found.locked_by is not None or found.queued:
                return False
        return True

    def _check(self, app: durafka.App, client: Client) -> None:
        """Every check of the phase; each failure is a problem of the report."""
        topics = HubTopics(self.hub)
        problems = self.report.problems
        records = status_records(read_topic(app.transport, topics.status))
        found, outputs = check_statuses(records, self.ledger)
        problems += found
        self.log(f"statuses checked ({len(records)} records): {len(found)} problems")
        entities: dict[str, EntityMetadata | None] = {
            str(e): client.get_entity(e)
            for e in [*map(soak.counter, COUNTER_KEYS), *map(soak.account, range(ACCOUNTS))]
        }
        problems += check_entities(entities, self.ledger, outputs)
        found, summary = check_activities(read_activity_runs(self.marker_dir), self.ledger)
        problems += found
        self.report.notes.append(summary)
        problems += check_dead_letters(read_topic(app.transport, topics.dead_letters))
        self.log("entities, activities and dead letters checked; restoring every partition")
        found, summary = check_restored_stores(
            app.transport,
            self.hub,
            self.size.partitions,
            self.roles.state_dirs,
            self.root / "restored",
        )
        problems += found
        self.report.notes.append(summary)
        if self.ledger.in_doubt:
            self.report.notes.append(
                f"{len(self.ledger.in_doubt)} writes were retried after an unknown outcome: "
                f"{self.ledger.in_doubt[:5]}"
            )
        self.log(f"checks done: {len(problems)} problems")

    def _role_log_counts(self) -> str:
        counts = Counter[str]()
        for process in self.roles.started:
            text = process.log_text()
            for label, pattern in _NOTABLE.items():
                counts[label] += len(re.findall(pattern, text))
        shown = ", ".join(f"{label}: {counts[label]}" for label in _NOTABLE)
        return f"role logs ({len(self.roles.started)} processes): {shown}"


def _last_error(log: str) -> str:
    """Why a role exited: the last durafka exception of its log, else its last ERROR line.

    The watchdog's "stuck in a Kafka call" line is CRITICAL, and counts too.
    """
    lines = log.splitlines()
    ours = [line for line in lines if line.startswith("durafka.errors.")]
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
    chosen = ours or errors
    return chosen[-1].strip()[:300] if chosen else "no error logged"


def _status_label(st: durafka.OrchestrationStatus | None) -> str:
    return "no status" if st is None else st.runtime_status.value
