"""The soak's processes: its own Kafka broker, and the role processes of a phase.

:class:`SoakBroker` is a :class:`~durafka.devbroker.LocalBroker` in a directory
of the soak's own (never the shared test broker: the soak kills it), with the
faults the soak injects: ``kill -9`` and restart on the same data dir and port,
and a freeze (SIGSTOP, then SIGCONT).

:class:`RoleSet` runs the role processes of a phase's
:class:`~tests.soak.schedule.Layout` with :class:`~tests.support.processes.RoleLauncher`:
one state dir per role name (kept across a restart, or wiped), one log file
per incarnation, and it tells a process it killed from one that died on its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from durafka.dev.broker import LocalBroker
from tests.soak.app import MARKER_DIR_ENV
from tests.soak.schedule import Layout, RoleSpec
from tests.support.processes import RoleLauncher, RoleProcess, hub_env

__all__ = ["APP_SPEC", "RoleSet", "SoakBroker"]

#: The app every role process runs.
APP_SPEC = "tests.soak.app:app"
#: The ``durafka`` command with stack dumps on SIGUSR1 (see :mod:`tests.soak.role`).
_ROLE_MODULE = "tests.soak.role"

#: What a role process logs once its roles run (durafka.cli.apps).
_SERVING = "serving task hub"
#: What a role logs when SIGTERM found it in a Kafka call past its bound (librdkafka's
#: send_offsets_to_transaction after a broker restart, confluentinc/librdkafka#5456).
_STUCK_AT_STOP = re.compile(r"did not stop within \d+ s; exiting anyway [^\n]*; stuck in [^\n]*")
#: A killed group member's partitions move after 6 s instead of the default 45 s.
#: Consumer settings only: producers given them would warn on every start.
_FAST_GROUP = json.dumps(
    {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "1000"}
)


class SoakBroker:
    """A broker the soak owns, with the faults it injects.

    Args:
        data_dir: the broker's data dir (config, log, topics).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._broker = LocalBroker(data_dir)
        #: ``127.0.0.1:port``, set by :meth:`start` and kept across restarts.
        self.bootstrap = ""

    def start(self) -> str:
        """Start the broker on a port the OS picks; its bootstrap address."""
        self.bootstrap = self._broker.start()
        return self.bootstrap

    @property
    def pid(self) -> int:
        """The broker JVM's process id."""
        pid = self._broker.status().pid
        if pid is None:
            raise AssertionError(f"the soak's broker in {self.data_dir} is not running")
        return pid

    def kill(self) -> None:
        """``kill -9`` the broker JVM: no shutdown, open transactions and unflushed pages lost."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self._broker.status().running:
            if time.monotonic() > deadline:
                raise AssertionError(f"the broker (pid {pid}) survived kill -9 for 30 s")
            time.sleep(0.05)
        self._broker.stop()  # reaps the dead child, removes the pid file

    def restart(self) -> None:
        """Start the broker again on the same data dir and client port."""
        # The same port: the role processes and clients know this address only.
        port = int(self.bootstrap.rpartition(":")[2])
        self._broker = LocalBroker(self.data_dir, port=port)
        self._broker.start(timeout=180)

    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the frozen broker."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker (SIGCONT first, in case it is frozen)."""
        pid = self._broker.status().pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self._broker.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker's log."""
        return self._broker.log_tail(lines)


@dataclass
class _Slot:
    """One role of the layout: its spec, its state dir, its current incarnation."""

    spec: RoleSpec
    state_dir: Path
    process: RoleProcess | None = None
    incarnation: int = 0


class RoleSet:
    """The role processes of one phase.

    Args:
        layout: which roles run.
        launcher: starts the processes (log files under its ``log_dir``).
        bootstrap: the broker's address.
        hub: the phase's task hub.
        partitions: partitions of the hub.
        root: the phase's directory (state dirs under ``root/state/<role>``).
        marker_dir: where activities record their executions.
    """

    def __init__(
        self,
        layout: Layout,
        launcher: RoleLauncher,
        *,
        bootstrap: str,
        hub: str,
        partitions: int,
        root: Path,
        marker_dir: Path,
    ) -> None:
        self._launcher = launcher
        self._bootstrap = bootstrap
        self._hub = hub
        self._partitions = partitions
        self._marker_dir = marker_dir
        self._slots = {spec.name: _Slot(spec, root / "state" / spec.name) for spec in layout.roles}
        #: Every process this set started, in order (the living and the dead).
        self.started: list[RoleProcess] = []

    @property
    def state_dirs(self) -> dict[str, Path]:
        """Role name -> its state dir."""
        return {name: slot.state_dir for name, slot in self._slots.items()}

    def start_all(self) -> None:
        """Start every role of the layout."""
        for name in self._slots:
            self.start(name)

    def start(self, name: str, *, wipe: bool = False) -> RoleProcess:
        """Start role ``name`` (again), on its state dir or, with ``wipe``, an emptied one."""
        slot = self._slots[name]
        if slot.process is not None and slot.process.is_alive():
            raise AssertionError(f"{name} is still running (pid {slot.process.pid})")
        if wipe:
            shutil.rmtree(slot.state_dir, ignore_errors=True)
        slot.incarnation += 1
        env = hub_env(
            self._bootstrap,
            self._hub,
            slot.state_dir,
            partitions=self._partitions,
            DURAFKA_CLIENT_CONFIG=_FAST_GROUP,
        )
        env[MARKER_DIR_ENV] = str(self._marker_dir)
        spec = slot.spec
        slot.process = self._launcher.start(
            spec.role,
            APP_SPEC,
            env,
            name=f"{self._hub}-{name}.{slot.incarnation}",
            partitions=spec.partitions,
            module=_ROLE_MODULE,
        )
        self.started.append(slot.process)
        return slot.process

    def kill(self, name: str) -> RoleProcess:
        """``kill -9`` role ``name``; the dead process."""
        process = self.process(name)
        process.kill()
        return process

    def process(self, name: str) -> RoleProcess:
        """The current incarnation of role ``name``."""
        process = self._slots[name].process
        if process is None:
            raise AssertionError(f"{name} was never started")
        return process

    def died_on_their_own(self) -> list[RoleProcess]:
        """Roles whose current incarnation exited although nobody stopped it."""
        return [
            slot.process
            for slot in self._slots.values()
            if slot.process is not None and not slot.process.is_alive()
        ]

    def stacks(self, wait: float = 2.0) -> dict[str, str]:
        """Every live role's thread stacks (SIGUSR1), by process name; the roles run on."""
        live = [s.process for s in self._slots.values() if s.process and s.process.is_alive()]
        before = {p.name: len(p.log_text()) for p in live}
        for process in live:
            process.send_signal(signal.SIGUSR1)
        time.sleep(wait)
        return {p.name: _durafka_frames(p.log_text()[before[p.name] :]) for p in live}

    def wait_for_log(self, pattern: str, *, role: str, timeout: float) -> None:
        """Wait until every process of kind ``role`` logged ``pattern``."""
        for slot in self._slots.values():
            if slot.spec.role == role and slot.process is not None:
                slot.process.wait_for_log(pattern, timeout=timeout)

    def stop_all(self, timeout: float = 60.0) -> tuple[list[str], list[str]]:
        """Stop every role cleanly (SIGTERM): a problem for each that did not exit with 0,
        a note instead for one that exited late from a Kafka call stuck past its bound
        (librdkafka's, as the watchdog's exits: see :data:`_STUCK_AT_STOP`)."""
        problems: list[str] = []
        notes: list[str] = []
        live = [s.process for s in self._slots.values() if s.process and s.process.is_alive()]
        deadline = time.monotonic() + timeout
        for process in live:
            # A role restarted a moment ago may still be importing durafka, before any
            # handler of ours exists: Python's default SIGTERM ends it with -15 then.
            try:
                process.wait_for_log(_SERVING, timeout=max(0.1, deadline - time.monotonic()))
            except AssertionError as exc:
                problems.append(f"{process.name} never started serving: {exc}")
        for process in live:
            process.terminate()
        for process in live:
            status = process.wait(max(0.1, deadline - time.monotonic()))
            if status is None:
                before = len(process.log_text())
                process.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                frames = _durafka_frames(process.log_text()[before:])
                process.kill()
                problems.append(
                    f"{process.name} did not stop within {timeout:.0f}s of SIGTERM (killed); "
                    f"its stacks then:\n{frames}"
                )
            elif status != 0:
                stuck = _STUCK_AT_STOP.search(process.log_text())
                if stuck:
                    notes.append(f"{process.name} stopped late (status {status}): {stuck[0]}")
                    continue
                problems.append(
                    f"{process.name} exited with {status} on SIGTERM\n{process.log_tail(30)}"
                )
        return problems, notes


def _durafka_frames(dump: str, limit: int = 30) -> str:
    """The thread headers and durafka's own frames of a faulthandler dump."""
    kept = [
        line.rstrip()
        for line in dump.splitlines()
        if line.startswith(("Thread ", "Current thread "))
        or (line.startswith("  File ") and "/durafka/" in line)
    ]
    return "\n".join(kept[:limit]) or "(no stack written)"
