"""Reading a role's Prometheus families in process, without scraping HTTP."""

from __future__ import annotations

from durafka.observability.metrics import RoleMetrics


def gauge(metrics: RoleMetrics, name: str, **labels: str) -> float:
    """The sum of the samples of family ``name`` whose labels include ``labels``."""
    for family in metrics.families():
        if family.name == name:
            return sum(s.value for s in family.samples if labels.items() <= s.labels.items())
    raise LookupError(f"the role has no metric family {name!r}")
