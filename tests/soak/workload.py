"""What the soak starts, and what each instance must end with.

:class:`WorkloadPlan` draws one start after the other from its own
``random.Random``: the same seed gives the same starts in the same order (the
wall-clock moment of each start depends on the machine, the order does not).
Every start comes with its :class:`Expectation`: the output, the activity calls
that must have run, and the children it starts. :class:`Ledger` collects the
expectations of everything actually started, plus the entity operations the
soak sent itself, for the end checks.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.soak import app as soak

__all__ = [
    "ACCOUNTS",
    "COUNTER_KEYS",
    "INITIAL_BALANCE",
    "Between",
    "ClientSignals",
    "EventToRaise",
    "Exactly",
    "Expectation",
    "Kind",
    "Ledger",
    "Start",
    "WorkloadPlan",
]

#: Bank accounts of a phase; each gets :data:`INITIAL_BALANCE` before the workload starts.
ACCOUNTS = 8
INITIAL_BALANCE = 100
#: The counter entities the signals go to.
COUNTER_KEYS = ("c0", "c1", "c2", "c3")

#: An approval that is raised waits this long at most: under any chaos the event wins.
_APPROVAL_NEVER_TIMES_OUT_MS = 3_600_000


class Kind(enum.StrEnum):
    """The kinds of work the soak mixes."""

    HELLO = "hello"
    SEQUENCE = "sequence"
    FAN_OUT = "fan_out"
    TIMER = "timer"
    APPROVAL = "approval"
    PARENT = "parent"
    LOOP = "loop"
    TIMEOUT_LOOP = "timeout_loop"
    SIGNAL_COUNTER = "signal_many"
    CLIENT_SIGNALS = "client_signals"
    TRANSFER = "transfer"
    AUDIT = "audit"


#: Relative weights of the kinds in the mix.
_WEIGHTS: dict[Kind, int] = {
    Kind.HELLO: 18,
    Kind.SEQUENCE: 14,
    Kind.FAN_OUT: 9,
    Kind.TIMER: 10,
    Kind.APPROVAL: 10,
    Kind.PARENT: 6,
    Kind.LOOP: 6,
    Kind.TIMEOUT_LOOP: 2,
    Kind.SIGNAL_COUNTER: 8,
    Kind.CLIENT_SIGNALS: 5,
    Kind.TRANSFER: 12,
    Kind.AUDIT: 1,
}


@dataclass(frozen=True)
class Exactly:
    """The output must equal ``value`` (as JSON values)."""

    value: Any

    def problem(self, output: Any) -> str | None:
        """Why ``output`` is wrong, or None."""
        return None if output == self.value else f"output {output!r}, expected {self.value!r}"


@dataclass(frozen=True)
class Between:
    """The output must be an integer in ``[low, high]`` (a transfer's amount)."""

    low: int
    high: int

    def problem(self, output: Any) -> str | None:
        """Why ``output`` is wrong, or None."""
        if isinstance(output, int) and self.low <= output <= self.high:
            return None
        return f"output {output!r}, expected an integer in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Expectation:
    """How one instance must end.

    Attributes:
        instance_id: the instance.
        kind: what it runs.
        output: the check of its output (it must complete).
        activity_tags: the tags of the activity calls it must have made.
        transfer: for a transfer, what it was asked to move.
        timed_tags: the tags of calls made with a timeout: each may also never run
            (a worker skips a task whose timeout expired before it took it, e.g.
            while its partition waited for a worker restarted after a broker kill).
    """

    instance_id: str
    kind: Kind
    output: Exactly | Between
    activity_tags: tuple[str, ...] = ()
    transfer: soak.Transfer | None = None
    timed_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventToRaise:
    """An external event the soak raises ``delay`` seconds after the start."""

    instance_id: str
    name: str
    data: int
    delay: float


@dataclass(frozen=True)
class ClientSignals:
    """``n`` signals ``add 1`` the soak sends to a counter itself (no instance)."""

    key: str
    n: int


@dataclass(frozen=True)
class Start:
    """One step of the workload: an instance to start (with what follows) or client signals.

    Attributes:
        orchestration: the registered orchestration, None for client signals.
        instance_id: the id to start it with.
        input: its input.
        expectations: the instance's and its children's.
        event: an event to raise to it later.
        signals: signals the soak sends instead of starting anything.
    """

    orchestration: str | None
    instance_id: str
    input: Any
    expectations: tuple[Expectation, ...] = ()
    event: EventToRaise | None = None
    signals: ClientSignals | None = None

    def describe(self) -> str:
        """One line for the log."""
        if self.signals is not None:
            return f"{self.signals.n} client signals to counter {self.signals.key}"
        return f"{self.orchestration} {self.instance_id} ({self.input!r})"


class WorkloadPlan:
    """The seeded sequence of starts of one phase.

    Args:
        seed: the workload's seed (derived from the soak's seed and the phase).
        prefix: prepended to every instance id (the phase's name).
    """

    def __init__(self, seed: str, prefix: str) -> None:
        self._rng = random.Random(seed)
        self._prefix = prefix
        self._n = 0
        self._kinds = list(_WEIGHTS)
        self._weights = [_WEIGHTS[k] for k in self._kinds]

    def next(self) -> Start:
        """The next start of the sequence."""
        rng = self._rng
        kind = rng.choices(self._kinds, self._weights)[0]
        iid = f"{self._prefix}-{kind.value}-{self._n}"
        self._n += 1
        name = kind.value
        if kind is Kind.HELLO:
            n = rng.randint(0, 999)
            return _single(kind, iid, n, f"Hello, {n}!", (f"{iid}/0",))
        if kind is Kind.SEQUENCE:
            start = rng.randint(0, 999)
            return _single(kind, iid, start, start + 5, _steps(iid, 5))
        if kind is Kind.FAN_OUT:
            n = rng.randint(3, 12)
            return _single(kind, iid, n, n * (n - 1), _steps(iid, n))
        if kind is Kind.TIMER:
            delay_ms = rng.randint(200, 3000)
            return _single(kind, iid, delay_ms, delay_ms + 1, (f"{iid}/0",))
        if kind is Kind.APPROVAL:
            if rng.random() < 0.8:
                data = rng.randint(0, 999)
                waits = _single(
                    kind,
                    iid,
                    soak.Approval(_APPROVAL_NEVER_TIMES_OUT_MS),
                    f"approved Hello, {data}!",
                    (f"{iid}/0",),
                )
                event = EventToRaise(iid, soak.APPROVAL_EVENT, data, rng.uniform(0.1, 2.0))
                return Start(name, iid, waits.input, waits.expectations, event=event)
            # Nobody raises it: the wait times out.
            return _single(kind, iid, soak.Approval(rng.randint(300, 2000)), "timed out", ())
        if kind is Kind.PARENT:
            k = rng.randint(2, 3)
            children = [
                Expectation(
                    f"{iid}.c{i}", Kind.SEQUENCE, Exactly(10 * i + 5), _steps(f"{iid}.c{i}", 5)
                )
                for i in range(k)
            ]
            children.append(
                Expectation(f"{iid}.h", Kind.HELLO, Exactly(f"Hello, {k}!"), (f"{iid}.h/0",))
            )
            total = sum(10 * i + 5 for i in range(k))
            own = Expectation(iid, kind, Exactly({"sum": total, "hello": f"Hello, {k}!"}))
            return Start(name, iid, k, (own, *children))
        if kind is Kind.LOOP:
            left = rng.randint(3, 8)
            tags = tuple(f"{iid}/g{g}" for g in range(1, left + 1))
            return _single(kind, iid, soak.LoopState(left), left * (left + 1), tags)
        if kind is Kind.TIMEOUT_LOOP:
            left = rng.randint(2, 4)
            tags = tuple(f"{iid}/g{g}" for g in range(1, left + 1))
            # An even generation gives up after 300 ms on a call that takes 900 ms; its
            # late result arrives while the next one waits for its own call (same seq).
            state = soak.TimeoutLoopState(
                left, sleep_ms=900, short_timeout_ms=300, long_timeout_ms=30_000
            )
            own = Expectation(iid, kind, Exactly([]), timed_tags=tags)
            return Start(kind.value, iid, state, (own,))
        if kind is Kind.SIGNAL_COUNTER:
            spec = soak.SignalMany(rng.choice(COUNTER_KEYS), rng.randint(5, 30))
            return _single(kind, iid, spec, spec.n, ())
        if kind is Kind.CLIENT_SIGNALS:
            signals = ClientSignals(rng.choice(COUNTER_KEYS), rng.randint(1, 10))
            return Start(None, iid, None, signals=signals)
        if kind is Kind.TRANSFER:
            source, target = rng.sample(range(ACCOUNTS), 2)
            t = soak.Transfer(source, target, rng.randint(10, 60))
            own = Expectation(iid, kind, Between(0, t.amount), transfer=t)
            return Start(name, iid, t, (own,))
        assert kind is Kind.AUDIT
        return _single(kind, iid, ACCOUNTS, ACCOUNTS * INITIAL_BALANCE, ())


def _steps(iid: str, n: int) -> tuple[str, ...]:
    return tuple(f"{iid}/{i}" for i in range(n))


def _single(kind: Kind, iid: str, input: Any, output: Any, tags: tuple[str, ...]) -> Start:
    return Start(kind.value, iid, input, (Expectation(iid, kind, Exactly(output), tags),))


@dataclass
class Ledger:
    """Everything one phase really started or sent: what the end checks compare against.

    Attributes:
        expectations: instance id -> how it must end (children included).
        counter_signals: counter key -> signals sent to it (by instances and the soak).
        in_doubt: writes retried after an error that left their outcome unknown.
        signals_in_doubt: counter key -> signals that may have been written twice
            (retried after an unknown outcome: the client's at-least-once, not the
            engine's).
    """

    expectations: dict[str, Expectation] = field(default_factory=dict)
    counter_signals: Counter[str] = field(default_factory=Counter)
    in_doubt: list[str] = field(default_factory=list)
    signals_in_doubt: Counter[str] = field(default_factory=Counter)

    def record(self, start: Start) -> None:
        """Note a start (or client signals) that was written."""
        if start.signals is not None:
            self.counter_signals[start.signals.key] += start.signals.n
            return
        for expectation in start.expectations:
            self.expectations[expectation.instance_id] = expectation
            if expectation.kind is Kind.SIGNAL_COUNTER:
                spec = start.input
                assert isinstance(spec, soak.SignalMany)
                self.counter_signals[spec.key] += spec.n

    def activity_tags(self) -> set[str]:
        """The tags of every activity call that must have run at least once."""
        return {tag for e in self.expectations.values() for tag in e.activity_tags}

    def timed_activity_tags(self) -> set[str]:
        """The tags of the calls made with a timeout: they may run, or expire unrun."""
        return {tag for e in self.expectations.values() for tag in e.timed_tags}

    def kinds(self) -> Counter[str]:
        """How many instances of each kind were started (children included)."""
        return Counter(e.kind.value for e in self.expectations.values())
