"""Static partition ranges: plan them for N processor pods, check a set covers a hub.

In the production layout every processor pod owns a static range of the
co-partitioned topics' partitions (``durafka processor --partitions 0-5``).
The ranges must cover every partition exactly once: a partition in two ranges
is fenced away from one of them (each partition has its own
``transactional.id``), and a partition in none is processed by nobody.

Example:
    >>> plan_ranges(12, pods=5)
    ['0-2', '3-5', '6-7', '8-9', '10-11']
    >>> coverage_problems(["0-5", "4-11"], 12)
    ['partitions 4, 5 are in more than one range: 0-5, 4-11']
    >>> pod_range(12, pods=5, index=3)
    '8-9'
    >>> ordinal_of("durafka-processor-3")
    3

A Kubernetes StatefulSet names its pods ``<set>-0`` .. ``<set>-<N-1>``, so a
pod started with ``--pods N --ordinal-from-hostname`` takes range ``ordinal``
of ``plan_ranges(partitions, N)``: the pods' ranges cover the hub whatever N
is, and changing N (with ``replicas``) re-plans them in a rolling update.
"""

from __future__ import annotations

from collections import defaultdict

from durafka.errors import ConfigurationError

__all__ = [
    "coverage_problems",
    "format_range",
    "ordinal_of",
    "parse_partition_list",
    "plan_ranges",
    "pod_range",
]


def parse_partition_list(text: str) -> list[int]:
    """``"0-3,6"`` -> ``[0, 1, 2, 3, 6]`` (sorted, without duplicates).

    Raises:
        ConfigurationError: not a list of numbers and ``lo-hi`` ranges.
    """
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ConfigurationError(
                f"{text!r} is not a partition list like 0-3,6 (numbers and lo-hi ranges)"
            ) from None
        if first < 0 or last < first:
            raise ConfigurationError(f"{part.strip()!r} in {text!r} is not a range lo-hi, lo<=hi")
        out.update(range(first, last + 1))
    return sorted(out)


def format_range(partitions: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    runs: list[str] = []
    ordered = sorted(set(partitions))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def plan_ranges(partitions: int, pods: int) -> list[str]:
    """Contiguous ranges for ``pods`` processors over ``partitions`` partitions.

    Sizes differ by at most one (the first ranges take the remainder).

    Raises:
        ConfigurationError: fewer partitions than pods, or a count below 1.
    """
    if partitions < 1 or pods < 1:
        raise ConfigurationError("partitions and pods must be at least 1")
    if pods > partitions:
        raise ConfigurationError(
            f"{pods} pods cannot each own a partition of {partitions}: at most {partitions} pods"
        )
    size, extra = divmod(partitions, pods)
    ranges: list[str] = []
    first = 0
    for pod in range(pods):
        n = size + (1 if pod < extra else 0)
        ranges.append(format_range(list(range(first, first + n))))
        first += n
    return ranges


def coverage_problems(ranges: list[str], partitions: int) -> list[str]:
    """What keeps ``ranges`` from covering partitions ``0..partitions-1`` exactly once.

    Returns:
        One sentence per problem (partitions in several ranges, in none, or beyond
        the topic); empty when the ranges are a partition of the hub.
    """
    owners: dict[int, list[str]] = defaultdict(list)
    for text in ranges:
        for p in parse_partition_list(text):
            owners[p].append(text)
    problems: list[str] = []
    overlapping = sorted(p for p, who in owners.items() if len(who) > 1)
    if overlapping:
        involved = sorted({r for p in overlapping for r in owners[p]})
        problems.append(
            f"partitions {', '.join(map(str, overlapping))} are in more than one range: "
            f"{', '.join(involved)}"
        )
    missing = [p for p in range(partitions) if p not in owners]
    if missing:
        problems.append(
            f"partitions {', '.join(map(str, missing))} are in no range: nobody would process them"
        )
    beyond = sorted(p for p in owners if p >= partitions)
    if beyond:
        problems.append(
            f"partitions {', '.join(map(str, beyond))} do not exist (the hub has {partitions})"
        )
    return problems


def pod_range(partitions: int, pods: int, index: int) -> str:
    """The range of pod ``index`` (0-based) of ``pods``: ``plan_ranges(partitions, pods)[index]``.

    Raises:
        ConfigurationError: ``index`` is not below ``pods`` (the StatefulSet has more
            replicas than ``--pods`` says), or the plan itself is impossible.
    """
    if not 0 <= index < pods:
        raise ConfigurationError(
            f"pod index {index} is not one of the {pods} pods (0..{pods - 1}): "
            "change --pods together with the StatefulSet's replicas"
        )
    return plan_ranges(partitions, pods)[index]


def ordinal_of(hostname: str) -> int:
    """The ordinal a StatefulSet gave a pod: the number after the name's last ``-``.

    Raises:
        ConfigurationError: the name does not end in ``-<number>`` (not a StatefulSet pod).
    """
    _, sep, tail = hostname.rpartition("-")
    if not sep or not tail.isdigit():
        raise ConfigurationError(
            f"hostname {hostname!r} does not end in -<ordinal> as a StatefulSet pod's does; "
            "give --pod-index instead"
        )
    return int(tail)
