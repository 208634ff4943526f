"""What a soak run found: per phase and overall, with the verdict that fails a run.

Every problem is named with the seed and the phase; :meth:`SoakReport.verdict`
raises :class:`SoakFailure` listing all of them with the command that replays
the run, so one failure shows everything a run found.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["PhaseReport", "SoakFailure", "SoakReport"]


class SoakFailure(AssertionError):
    """The soak found problems; the message lists them with the seed to replay."""


@dataclass
class PhaseReport:
    """What one phase did and found.

    Attributes:
        name: the phase.
        hub: its task hub.
        problems: every check that failed, one entry each.
        notes: what else is worth knowing (activity re-runs, role log counts).
        started: instances started, by kind (children included).
        kill_cycles: role kill-and-restart cycles run.
        broker_kills: broker kill-and-restart cycles run.
        freezes: broker freezes run.
        pauses: role pauses run.
        exits: roles that exited on their own (restarted), with their last error.
        seconds: how long the phase took.
    """

    name: str
    hub: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: Counter[str] = field(default_factory=Counter)
    kill_cycles: int = 0
    broker_kills: int = 0
    freezes: int = 0
    pauses: int = 0
    seconds: float = 0.0
    exits: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines: what ran, what happened, what was found."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.started.items()))
        lines = [
            f"phase {self.name} (hub {self.hub}, {self.seconds:.0f}s): "
            f"{sum(self.started.values())} instances ({kinds}); {self.kill_cycles} kill "
            f"cycles, {self.pauses} role pauses, {self.broker_kills} broker kills, "
            f"{self.freezes} broker freezes",
            *(f"  note: {n}" for n in self.notes),
            *(f"  exited on its own: {e}" for e in self.exits),
            *(f"  PROBLEM: {p}" for p in self.problems),
        ]
        return "\n".join(lines)


@dataclass
class SoakReport:
    """The result of a soak run."""

    seed: int
    replay: str
    phases: list[PhaseReport] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every problem of every phase, each naming the seed and the phase."""
        return [
            f"seed {self.seed}, phase {phase.name}: {problem}"
            for phase in self.phases
            for problem in phase.problems
        ]

    @property
    def kill_cycles(self) -> int:
        """Role kill-and-restart cycles over all phases."""
        return sum(p.kill_cycles for p in self.phases)

    @property
    def broker_kills(self) -> int:
        """Broker kill-and-restart cycles over all phases."""
        return sum(p.broker_kills for p in self.phases)

    def summary(self) -> str:
        """Every phase's summary."""
        head = f"soak seed {self.seed}: {'FAILED' if self.problems else 'passed'}"
        return "\n".join([head, *(p.summary() for p in self.phases)])

    def verdict(self) -> None:
        """Raise :class:`SoakFailure` listing every problem, if there is any."""
        problems = self.problems
        if problems:
            raise SoakFailure(
                f"the soak with seed {self.seed} found {len(problems)} problems "
                f"(replay: {self.replay}):\n- " + "\n- ".join(problems)
            )
