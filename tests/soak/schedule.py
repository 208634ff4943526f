"""The soak's seeded plan: phases, their process layouts, and the faults of each.

Everything here is a pure function of the seed and the :class:`SoakSize`: the
same seed and size give the same plan (:func:`plan_soak`), which the runner
prints before it starts. Faults run one after the other, each a given number
of seconds after the previous one has finished (its processes restarted), so
the order, the targets and the gaps replay exactly on a slower machine too.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = [
    "CI_SIZE",
    "Fault",
    "FaultKind",
    "Layout",
    "PhasePlan",
    "RoleSpec",
    "SoakSize",
    "group_layout",
    "plan_soak",
    "static_layout",
]


class FaultKind(enum.StrEnum):
    """What a fault does."""

    #: ``kill -9`` one or two role processes, restart them after ``down_for``.
    KILL = "kill"
    #: ``kill -9`` the broker, restart it on the same data dir after ``down_for``.
    BROKER_KILL = "broker-kill"
    #: SIGSTOP the broker for ``down_for`` seconds, then SIGCONT.
    BROKER_FREEZE = "broker-freeze"
    #: SIGSTOP one role for ``down_for`` seconds (past its group session), then SIGCONT:
    #: a paused process (GC, VM pause) that wakes up as a zombie of its old partitions.
    PAUSE = "pause"


@dataclass(frozen=True)
class Fault:
    """One fault of a phase.

    Attributes:
        after: seconds after the previous fault finished (or the phase started).
        kind: what happens.
        targets: the roles killed (``KILL`` only).
        wipe: per target, whether it restarts on an emptied state dir.
        down_for: seconds until the restart (or the SIGCONT).
    """

    after: float
    kind: FaultKind
    targets: tuple[str, ...] = ()
    wipe: tuple[bool, ...] = ()
    down_for: float = 0.0

    def describe(self) -> str:
        """One line: when, what, to whom."""
        if self.kind is FaultKind.KILL:
            who = ", ".join(
                f"{t} ({'wiped' if w else 'same'} state)"
                for t, w in zip(self.targets, self.wipe, strict=True)
            )
            return f"+{self.after:4.1f}s kill -9 {who}, restart after {self.down_for:.1f}s"
        if self.kind is FaultKind.PAUSE:
            return f"+{self.after:4.1f}s pause {self.targets[0]} (SIGSTOP) for {self.down_for:.1f}s"
        if self.kind is FaultKind.BROKER_KILL:
            return f"+{self.after:4.1f}s kill -9 the broker, restart after {self.down_for:.1f}s"
        return f"+{self.after:4.1f}s freeze the broker (SIGSTOP) for {self.down_for:.1f}s"


@dataclass(frozen=True)
class RoleSpec:
    """One role process of a layout.

    Attributes:
        name: its label (log files, state dir, fault targets).
        role: ``processor`` or ``worker``.
        partitions: a static partition range of a processor, e.g. ``0-3`` (None: group).
    """

    name: str
    role: str
    partitions: str | None = None


@dataclass(frozen=True)
class Layout:
    """The role processes of a phase."""

    name: str
    roles: tuple[RoleSpec, ...]

    def role(self, name: str) -> RoleSpec:
        """The role called ``name``."""
        return next(r for r in self.roles if r.name == name)


def group_layout(processors: int = 3, workers: int = 2) -> Layout:
    """Processors sharing the partitions through the consumer group, and workers."""
    roles = [RoleSpec(f"p{i + 1}", "processor") for i in range(processors)]
    roles += [RoleSpec(f"w{i + 1}", "worker") for i in range(workers)]
    return Layout("group", tuple(roles))


def static_layout(partitions: int, workers: int = 1) -> Layout:
    """Two processors on static partition ranges (each half of the partitions), and workers."""
    half = partitions // 2
    roles = [
        RoleSpec("s1", "processor", f"0-{half - 1}"),
        RoleSpec("s2", "processor", f"{half}-{partitions - 1}"),
    ]
    roles += [RoleSpec(f"w{i + 1}", "worker") for i in range(workers)]
    return Layout("static", tuple(roles))


@dataclass(frozen=True)
class SoakSize:
    """How big a soak is.

    Attributes:
        group_seconds: chaos time of the group phase (0: no such phase), counted as
            the sum of the gaps between faults (faults themselves add their own time).
        static_seconds: the same for the static-range phase.
        partitions: partitions of each phase's task hub.
        starts_per_second: the rate the workload is started at.
        fault_gap: the range of seconds between two faults.
        kill_down: the range of seconds a killed role stays down.
        pause_seconds: the range of a role pause's length (longer than the 6 s session).
        freeze_seconds: the range of a broker freeze's length.
        broker_down: the range of seconds the killed broker stays down.
        broker_kill_every: phase seconds per broker kill (at least one per phase: a
            static range's transactions meet the broker's restart as the group's do).
        freeze_every: phase seconds per broker freeze (at least one per phase).
        drain_timeout: seconds the work started may take to finish after the chaos.
        group_min_kills: kill cycles the group phase has at least (more gaps if needed).
        static_min_kills: the same for the static-range phase.
    """

    group_seconds: float
    static_seconds: float
    partitions: int = 8
    starts_per_second: float = 8.0
    fault_gap: tuple[float, float] = (1.5, 5.0)
    kill_down: tuple[float, float] = (0.2, 2.5)
    pause_seconds: tuple[float, float] = (7.0, 10.0)
    freeze_seconds: tuple[float, float] = (2.0, 5.0)
    broker_down: tuple[float, float] = (1.0, 3.0)
    broker_kill_every: float = 600.0
    freeze_every: float = 120.0
    drain_timeout: float = 180.0
    group_min_kills: int = 0
    static_min_kills: int = 0

    @classmethod
    def for_minutes(cls, minutes: float) -> SoakSize:
        """A soak of about ``minutes`` of chaos gaps, two thirds in the group phase."""
        seconds = minutes * 60
        return cls(group_seconds=seconds * 2 / 3, static_seconds=seconds / 3)


#: The CI size: about two and a half minutes of chaos (gaps and faults), 20+ kill cycles.
CI_SIZE = SoakSize(
    group_seconds=55.0,
    static_seconds=25.0,
    # Longer than the slowest recovery the engine promises: librdkafka can leave a
    # transactional call blocked after a broker restart, and the watchdog ends that
    # process only once the call ran its bound (35 s: `_SEND_OFFSETS_TIMEOUT_S` +
    # `_SLACK_S` in durafka/transport/kafka.py) plus `watchdog_grace_ms` (30 s); the
    # restarted role then rejoins and catches up. With 60 s, a call stuck late in
    # the chaos was recovered after the drain gave up (CI, seed 471580).
    drain_timeout=120.0,
    group_min_kills=14,
    static_min_kills=6,
)


@dataclass(frozen=True)
class PhasePlan:
    """One phase: a layout on a task hub of its own, the workload, the faults.

    Attributes:
        name: ``group`` or ``static`` (also the instance id prefix).
        layout: the role processes.
        faults: in order.
        workload_seed: the seed of the phase's :class:`~tests.soak.workload.WorkloadPlan`.
    """

    name: str
    layout: Layout
    faults: tuple[Fault, ...]
    workload_seed: str

    @property
    def kill_cycles(self) -> int:
        """How many kill-and-restart cycles of role processes the phase has."""
        return sum(1 for f in self.faults if f.kind is FaultKind.KILL)

    def describe(self) -> str:
        """The plan, one fault per line."""
        roles = ", ".join(
            f"{r.name}={r.role}" + (f"[{r.partitions}]" if r.partitions else "")
            for r in self.layout.roles
        )
        lines = [f"phase {self.name}: {roles}; {len(self.faults)} faults:"]
        lines += [f"  {f.describe()}" for f in self.faults]
        return "\n".join(lines)


def plan_soak(seed: int, size: SoakSize) -> list[PhasePlan]:
    """The phases of a soak with ``seed`` and ``size``; the same arguments, the same plan."""
    phases: list[PhasePlan] = []
    if size.group_seconds > 0:
        phases.append(
            _plan_phase(seed, size, group_layout(), size.group_seconds, size.group_min_kills, True)
        )
    if size.static_seconds > 0:
        layout = static_layout(size.partitions)
        phases.append(
            _plan_phase(seed, size, layout, size.static_seconds, size.static_min_kills, True)
        )
    return phases


def _plan_phase(
    seed: int,
    size: SoakSize,
    layout: Layout,
    seconds: float,
    min_kills: int,
    must_kill_broker: bool,
) -> PhasePlan:
    rng = random.Random(f"{seed}/{layout.name}/faults")
    broker_kills = max(int(must_kill_broker), round(seconds / size.broker_kill_every))
    freezes = max(1, round(seconds / size.freeze_every))
    kinds = [FaultKind.BROKER_KILL] * broker_kills + [FaultKind.BROKER_FREEZE] * freezes
    rng.shuffle(kinds)
    # The broker faults come when the gaps so far pass evenly spread points; kills between.
    points = [seconds * (i + 1) / (len(kinds) + 1) for i in range(len(kinds))]
    processors = [r.name for r in layout.roles if r.role == "processor"]
    workers = [r.name for r in layout.roles if r.role == "worker"]
    faults: list[Fault] = []
    elapsed = 0.0
    kills = 0
    while elapsed < seconds or kinds or kills < min_kills:
        gap = round(rng.uniform(*size.fault_gap), 1)
        elapsed += gap
        if kinds and (elapsed >= points[0] or elapsed >= seconds):
            kind = kinds.pop(0)
            points.pop(0)
            down = size.broker_down if kind is FaultKind.BROKER_KILL else size.freeze_seconds
            faults.append(Fault(gap, kind, down_for=round(rng.uniform(*down), 1)))
        elif rng.random() < 0.1:
            target = rng.choice(processors)
            pause = round(rng.uniform(*size.pause_seconds), 1)
            faults.append(Fault(gap, FaultKind.PAUSE, (target,), (False,), pause))
        else:
            faults.append(_kill(rng, size, gap, processors, workers))
            kills += 1
    return PhasePlan(layout.name, layout, tuple(faults), f"{seed}/{layout.name}/workload")


def _kill(
    rng: random.Random, size: SoakSize, after: float, processors: list[str], workers: list[str]
) -> Fault:
    """A kill of one role (processors twice as often as workers) or, one time in five, two."""
    weighted = processors * 2 + workers
    first = rng.choice(weighted)
    targets = [first]
    if rng.random() < 0.2:
        targets.append(rng.choice([r for r in processors + workers if r != first]))
    wipe = tuple(rng.random() < 0.3 for _ in targets)
    return Fault(
        after, FaultKind.KILL, tuple(targets), wipe, round(rng.uniform(*size.kill_down), 1)
    )
