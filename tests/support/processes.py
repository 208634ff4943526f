"""durafka CLI roles as child processes, for fault-injection tests.

A :class:`RoleLauncher` starts ``python -m durafka.cli <role> <app>`` with the
``DURAFKA_*`` environment of one task hub, sends each child's output to its own
log file, and can ``kill -9`` a child (a crash: no cleanup, open transactions
left behind) or stop it cleanly (SIGTERM: the CLI drains and commits). On a
failed test, :meth:`RoleLauncher.log_tails` says what the children were doing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["RoleLauncher", "RoleProcess", "hub_env"]

#: The repository root: children import the test apps (``tests.e2e.apps``) from here.
REPO_ROOT = Path(__file__).resolve().parents[2]


def hub_env(
    bootstrap: str,
    hub: str,
    state_dir: Path,
    *,
    partitions: int = 4,
    transaction_timeout_ms: int = 10_000,
    **extra: str,
) -> dict[str, str]:
    """The ``DURAFKA_*`` variables that point a child at one task hub.

    Args:
        bootstrap: the broker's ``host:port``.
        hub: the task hub.
        state_dir: the RocksDB state root of a processor.
        partitions: partitions of the hub's co-partitioned topics.
        transaction_timeout_ms: how long the broker keeps a dead producer's
            transaction open (read_committed readers wait that long at most).
        **extra: further variables, e.g. ``DURAFKA_TEST_MARKER_DIR``.
    """
    return {
        "DURAFKA_TASK_HUB": hub,
        "DURAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DURAFKA_STATE_DIR": str(state_dir),
        "DURAFKA_PARTITIONS": str(partitions),
        "DURAFKA_TRANSACTION_TIMEOUT_MS": str(transaction_timeout_ms),
        **extra,
    }


class RoleProcess:
    """One running ``durafka`` role (``processor``, ``worker`` or ``run``).

    Attributes:
        name: a label for messages and the log file name.
        log_path: where the child's stdout and stderr go.
    """

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._popen = popen

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs (``-9`` after :meth:`kill`)."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        """Whether the child is still running."""
        return self._popen.poll() is None

    def kill(self) -> None:
        """``kill -9``: the child dies at once, leaving its transactions open."""
        if self.is_alive():
            self._popen.send_signal(signal.SIGKILL)
        self._popen.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the child stops running (as in a long GC or VM pause), holding everything."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused child runs again."""
        self.send_signal(signal.SIGCONT)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child if it still runs."""
        if self.is_alive():
            self._popen.send_signal(sig)

    def terminate(self) -> None:
        """Ask the child to stop cleanly (SIGTERM) without waiting."""
        if self.is_alive():
            self._popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the child to exit; its exit status or None."""
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """Stop cleanly (SIGTERM) and wait; ``kill -9`` and fail if it takes too long.

        Returns:
            The exit status (0 for a clean stop).

        Raises:
            AssertionError: the child did not exit within ``timeout`` seconds.
        """
        self.terminate()
        status = self.wait(timeout)
        if status is None:
            self.kill()
            raise AssertionError(
                f"{self.name} did not stop within {timeout}s of SIGTERM; killed it\n"
                f"{self.log_tail()}"
            )
        return status

    def log_text(self) -> str:
        """Everything the child wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the child's output, under a heading."""
        tail = self.log_text().splitlines()[-lines:]
        state = "running" if self.is_alive() else f"exited with {self.returncode}"
        return f"----- {self.name} (pid {self.pid}, {state}), last {len(tail)} lines -----\n" + (
            "\n".join(tail)
        )

    def wait_for_log(self, pattern: str, *, timeout: float = 60.0) -> re.Match[str]:
        """Wait until the output matches the regular expression ``pattern``.

        Raises:
            AssertionError: no match in time, or the child exited first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            if not self.is_alive():
                raise AssertionError(
                    f"{self.name} exited ({self.returncode}) before logging /{pattern}/\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not log /{pattern}/ within {timeout}s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def assert_alive(self) -> None:
        """Fail with the log tail if the child has exited."""
        if not self.is_alive():
            raise AssertionError(
                f"{self.name} exited unexpectedly ({self.returncode})\n{self.log_tail()}"
            )


class RoleLauncher:
    """Starts durafka roles as children and cleans them up.

    Example:
        >>> launcher = RoleLauncher(tmp_path / "logs")
        >>> env = hub_env(bootstrap, hub, tmp_path / "state")
        >>> proc = launcher.start("processor", "tests.e2e.apps:app", env, partitions="0-3")
        >>> proc.kill()
        >>> launcher.stop_all()

    Args:
        log_dir: where the children's log files go (created if missing).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[RoleProcess] = []

    def start(
        self,
        role: str,
        app: str,
        env: Mapping[str, str],
        *,
        name: str | None = None,
        partitions: str | None = None,
        module: str = "durafka.cli",
    ) -> RoleProcess:
        """Start ``python -m durafka.cli <role> <app>`` with ``env`` added to ours.

        Args:
            role: ``processor``, ``worker`` or ``run``.
            app: the app as ``module:attribute``.
            env: ``DURAFKA_*`` variables (see :func:`hub_env`).
            name: a label (default: the role and a counter).
            partitions: a static partition range for a processor, e.g. ``0-3``.
            module: the module run with ``python -m`` (one wrapping ``durafka.cli``).
        """
        name = name or f"{role}-{len(self.processes) + 1}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        args = [sys.executable, "-m", module, role, app]
        if partitions is not None:
            args += ["--partitions", partitions]
        child_env = {
            **os.environ,
            **env,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                args, cwd=REPO_ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT
            )
        proc = RoleProcess(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every child still running (SIGTERM, then ``kill -9`` after ``timeout``)."""
        for proc in self.processes:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            if proc.wait(max(0.1, deadline - time.monotonic())) is None:
                proc.kill()

    def log_tails(self, lines: int = 40) -> str:
        """The tail of every child's log, one section each."""
        return "\n".join(proc.log_tail(lines) for proc in self.processes)
