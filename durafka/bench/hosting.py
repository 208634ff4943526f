"""Where the system under test runs: in this process, or as role child processes.

A host starts the processors and the activity worker of one task hub, tells
whether they are still alive, and reports the CPU seconds and peak RSS of every
OS process involved (this one included: it runs the client).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from durafka.app import App
from durafka.bench.results import ProcessUsage
from durafka.errors import BenchmarkError
from durafka.settings import Settings

__all__ = [
    "EmbeddedHost",
    "Host",
    "SeparateHost",
    "broker_cpu",
    "role_env",
    "split_partitions",
]

#: The app the role processes serve.
BENCH_APP = "durafka.bench.workloads:app"
_MIB = 1024 * 1024
_LOG_TAIL_LINES = 30


class Host(Protocol):
    """Runs the roles of one task hub and accounts for their resources."""

    def start(self) -> None:
        """Start every role (returns at once; readiness is checked by the caller)."""

    def check(self) -> None:
        """Raise :class:`BenchmarkError` if a role has died."""

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) of each process since :meth:`start`."""

    def usage(self) -> list[ProcessUsage]:
        """CPU seconds since :meth:`start` and peak RSS of each process."""

    def stop(self) -> None:
        """Stop every role (drain and exit cleanly, force after a deadline)."""

    def describe(self) -> dict[str, object]:
        """The process layout, for the report."""

    def log_tails(self) -> str:
        """The end of every role process's output ("" when they run in this process)."""


@dataclass
class _Probe:
    """CPU and memory readings of one process, relative to a baseline."""

    name: str
    roles: list[str]
    process: psutil.Process
    baseline: tuple[float, float] = (0.0, 0.0)
    last: tuple[float, float] = (0.0, 0.0)
    peak_rss: int = 0
    own: bool = field(default=False)

    def mark(self) -> None:
        """Take the current CPU times as the baseline."""
        self.baseline = self._times()
        self.last = self.baseline

    def read(self) -> tuple[float, float]:
        """User and system CPU seconds since the baseline (the last reading once it exits)."""
        try:
            self.last = self._times()
            self.peak_rss = max(self.peak_rss, self._peak_rss())
        except psutil.Error:
            pass  # exited: its last reading stands
        return self.last[0] - self.baseline[0], self.last[1] - self.baseline[1]

    def usage(self) -> ProcessUsage:
        user, system = self.read()
        return ProcessUsage(
            name=self.name,
            roles=self.roles,
            pid=self.process.pid,
            cpu_user_s=round(user, 3),
            cpu_system_s=round(system, 3),
            cpu_s=round(user + system, 3),
            peak_rss_mb=round(self.peak_rss / _MIB, 1),
        )

    def _times(self) -> tuple[float, float]:
        if self.own:
            t = os.times()
            return t.user, t.system
        t2 = self.process.cpu_times()
        return t2.user, t2.system

    def _peak_rss(self) -> int:
        # Linux keeps the high-water mark (VmHWM); elsewhere the current RSS, sampled
        # at each reading, is the best estimate.
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        if self.own:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak if sys.platform == "darwin" else peak * 1024
        return int(self.process.memory_info().rss)


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"})


def broker_cpu(bootstrap: str) -> Callable[[], dict[str, float]]:
    """A reading of the broker's CPU seconds, when it runs on this machine.

    The broker is the process listening on the first bootstrap address, if that
    address is on loopback; the reading is ``{"broker": seconds}`` since this
    call, or ``{}`` when the broker is elsewhere or cannot be seen. On a shared
    broker, it includes what other clients made it do.
    """
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if host not in _LOOPBACK or not port.isdigit():
        return dict
    try:
        pids = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == int(port)
        }
        pids.discard(None)
        if len(pids) != 1:
            return dict
        probe = _Probe("broker", ["broker"], psutil.Process(pids.pop()))
        probe.mark()
    except psutil.Error:
        return dict
    return lambda: {"broker": sum(probe.read())}


def _own_probe(roles: list[str]) -> _Probe:
    return _Probe("bench", roles, psutil.Process(), own=True)


class EmbeddedHost:
    """A processor (every partition) and a worker on threads of this process.

    Args:
        app: the run's app (settings and the bench registry).
    """

    def __init__(self, app: App) -> None:
        self._app = app
        self._runner = app.runner(partitions=list(range(app.settings.partition_count())))
        self._probe = _own_probe(["client", "processor", "worker"])

    def start(self) -> None:
        self._probe.mark()
        self._runner.start()

    def check(self) -> None:
        err = self._runner.failed
        if err is not None:
            raise BenchmarkError(f"an embedded durafka role failed: {err!r}") from err

    def cpu_seconds(self) -> dict[str, float]:
        return {self._probe.name: sum(self._probe.read())}

    def usage(self) -> list[ProcessUsage]:
        return [self._probe.usage()]

    def stop(self) -> None:
        self._runner.stop()

    def describe(self) -> dict[str, object]:
        return {"mode": "embedded", "processors": 1, "workers": 1, "os_processes": 1}

    def log_tails(self) -> str:
        return ""  # the roles log through this process's logging


def split_partitions(partitions: int, processors: int) -> list[str]:
    """Contiguous static ranges, as even as possible: ``(8, 3)`` -> ``["0-2", "3-5", "6-7"]``."""
    base, extra = divmod(partitions, processors)
    ranges: list[str] = []
    lo = 0
    for k in range(processors):
        hi = lo + base + (1 if k < extra else 0) - 1
        ranges.append(f"{lo}-{hi}")
        lo = hi + 1
    return ranges


def role_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without its ``DURAFKA_*`` variables, plus every field of ``settings``.

    Every field is passed explicitly so that the children run with exactly the
    settings the benchmark reports, whatever the caller's environment holds.
    """
    env = {k: v for k, v in base.items() if not k.startswith("DURAFKA_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        env[f"DURAFKA_{name.upper()}"] = text
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            lines = []
        return f"--- {self.name} (pid {self.popen.pid}), {self.log_path}:\n" + "\n".join(lines)


class SeparateHost:
    """``durafka processor`` x K (static partition ranges) and ``durafka worker`` children.

    Args:
        settings: the run's settings (passed to the children as ``DURAFKA_*``).
        processors: how many processor processes split the partitions.
        log_dir: where each child's output goes (``<name>.log``).
    """

    def __init__(self, settings: Settings, processors: int, log_dir: Path) -> None:
        self._settings = settings
        self._ranges = split_partitions(settings.partition_count(), processors)
        self._log_dir = log_dir
        self._children: list[_Child] = []
        self._probes: list[_Probe] = [_own_probe(["client"])]

    def start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._probes[0].mark()
        env = role_env(self._settings, os.environ)
        try:
            for k, partitions in enumerate(self._ranges, start=1):
                self._spawn(
                    f"processor-{k}", ["processor", BENCH_APP, "--partitions", partitions], env
                )
            self._spawn("worker", ["worker", BENCH_APP], env)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log_path = self._log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "durafka.cli", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._children.append(_Child(name, popen, log_path))
        role = "processor" if name.startswith("processor") else "worker"
        probe = _Probe(name, [role], psutil.Process(popen.pid))
        # Its CPU counts from its birth: start-up (imports, connections) is its cost too.
        self._probes.append(probe)

    def check(self) -> None:
        dead = [c for c in self._children if c.popen.poll() is not None]
        if dead:
            tails = "\n".join(c.tail() for c in dead)
            codes = ", ".join(f"{c.name} exited with {c.popen.returncode}" for c in dead)
            raise BenchmarkError(f"a role process died: {codes}\n{tails}")

    def cpu_seconds(self) -> dict[str, float]:
        return {p.name: sum(p.read()) for p in self._probes}

    def usage(self) -> list[ProcessUsage]:
        return [p.usage() for p in self._probes]

    def stop(self, timeout: float = 30.0) -> None:
        for p in self._probes:
            p.read()  # last readings before the children go away
        for c in self._children:
            if c.popen.poll() is None:
                c.popen.send_signal(signal.SIGTERM)
        for c in self._children:
            try:
                c.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                c.popen.kill()
                c.popen.wait(10)

    def log_tails(self) -> str:
        """The end of every child's output (for error reports)."""
        return "\n".join(c.tail() for c in self._children)

    def describe(self) -> dict[str, object]:
        return {
            "mode": "separate",
            "processors": len(self._ranges),
            "processor_partitions": self._ranges,
            "workers": 1,
            "os_processes": len(self._ranges) + 2,
        }
