"""``topology describe|diff``: a task hub's topics on the broker against the topology spec.

The comparison is :func:`durafka.topology.topic_differences`, the one
``durafka topology apply`` and ``App.ensure_topics`` refuse on; here it is only
reported, and nothing is created or changed.
"""

from __future__ import annotations

from pathlib import Path

from durafka.management.models import TopicInfo, TopologyReport
from durafka.topology import DEFAULT_SPEC_PATH, HUB_TOPIC_KEYS, load_hub_spec, topic_differences
from durafka.transport.base import Transport

__all__ = ["topology_report"]


def topology_report(
    transport: Transport,
    hub: str,
    spec: Path | None = None,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> TopologyReport:
    """Each topic of ``hub``: what the spec asks for, what the broker has, how they differ.

    Args:
        transport: the broker's transport.
        hub: the task hub.
        spec: a topology spec (default: ``topology/default.toml``).
        partitions: the partition count override, as for ``topology apply``.
        replication_factor: the replication factor override, as for ``topology apply``.

    Raises:
        ConfigurationError: the spec is invalid.
        BrokerUnavailableError: the broker did not answer.
    """
    specs = load_hub_spec(hub, spec, partitions=partitions, replication_factor=replication_factor)
    actual = transport.describe_topics(specs)
    topics = []
    for key, wanted in zip(HUB_TOPIC_KEYS, specs, strict=True):
        found = actual.get(wanted.name)
        differences = (
            topic_differences(wanted, found) if found is not None else [f"{wanted.name}: missing"]
        )
        topics.append(
            TopicInfo(
                key=key,
                name=wanted.name,
                exists=found is not None,
                partitions=found.partitions if found is not None else None,
                replication_factor=found.replication_factor if found is not None else None,
                config=dict(found.config) if found is not None else {},
                expected_partitions=wanted.partitions,
                expected_replication_factor=wanted.replication_factor,
                expected_config=dict(wanted.config),
                differences=differences,
            )
        )
    return TopologyReport(
        task_hub=hub,
        spec=str(spec if spec is not None else DEFAULT_SPEC_PATH),
        in_sync=not any(t.differences for t in topics),
        topics=topics,
    )
