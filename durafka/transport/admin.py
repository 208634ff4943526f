"""Topic administration on Kafka: make a cluster hold a task hub's topics, never drift them.

:func:`apply_topics` creates what is missing, leaves what matches and refuses
(:class:`~durafka.errors.TopologyMismatchError`) to touch a topic that differs
from its :class:`~durafka.topology.TopicSpec`: a changed partition count
silently breaks co-partitioning and key placement. The comparison itself is
:func:`durafka.topology.topic_differences`, shared with ``memory://``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

# confluent_kafka.admin re-exports these without __all__, which strict mypy
# (no implicit re-export) rejects; they are its documented public API.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from durafka.errors import BrokerUnavailableError, ConfigurationError
from durafka.topology import TopicSpec, mismatch_error, topic_differences

__all__ = [
    "ApplyReport",
    "admin_client",
    "apply_topics",
    "broker_count",
    "delete_topics_and_groups",
    "describe_topics",
]


log = logging.getLogger(__name__)


def admin_client(bootstrap: str, config: Mapping[str, Any] | None = None) -> AdminClient:
    """A confluent-kafka admin client for ``bootstrap``.

    Args:
        bootstrap: the cluster's ``bootstrap.servers``.
        config: more librdkafka settings (security, ``log_level``), unprefixed.
    """
    return AdminClient({"bootstrap.servers": bootstrap, **(config or {})})


def broker_count(admin: AdminClient, timeout: float) -> int:
    """How many brokers the cluster's metadata lists; 0 if it did not answer in ``timeout`` s."""
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return 0


@dataclass(frozen=True)
class ApplyReport:
    """What :func:`apply_topics` did.

    Attributes:
        created: topics created by this call.
        unchanged: topics that already existed and match their spec.
    """

    created: tuple[str, ...]
    unchanged: tuple[str, ...]


def apply_topics(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    timeout: float = 30.0,
    *,
    cluster: str = "the cluster",
) -> ApplyReport:
    """Make the broker hold ``specs``: create what is missing, verify the rest.

    Nothing is created when any existing topic differs from its spec. A topic
    created concurrently by someone else (``TOPIC_ALREADY_EXISTS``) is verified
    like any existing one. Returns once every created topic has a leader for
    each partition, so producers can use them right away.

    Args:
        admin: a confluent-kafka admin client connected to the cluster.
        specs: the topics, e.g. from :func:`~durafka.topology.load_hub_spec`.
        timeout: overall deadline in seconds.
        cluster: names the cluster in error messages (its bootstrap servers).

    Returns:
        Which topics were created and which already matched.

    Raises:
        TopologyMismatchError: an existing topic has another partition count,
            replication factor or config value; the message names each one
            with the expected and actual value.
        ConfigurationError: the broker rejected a topic (e.g. a replication
            factor above the number of brokers).
        BrokerUnavailableError: the broker did not answer within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    existing = _existing(admin, specs, deadline)
    _verify(admin, [s for s in specs if s.name in existing], existing, deadline, cluster)

    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    raced: list[TopicSpec] = []
    if missing:
        wait = _remaining(deadline)
        futures = admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication_factor, config=s.config)
                for s in missing
            ],
            operation_timeout=wait,
            request_timeout=wait,
        )
        for spec in missing:
            try:
                futures[spec.name].result()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    raced.append(spec)
                else:
                    raise _admin_error(f"could not create topic {spec.name}", error) from exc
            else:
                created.append(spec.name)
        if raced:
            # The other creator's topic may not be in the metadata yet.
            _await_leaders(admin, [(s.name, None) for s in raced], deadline)
            _verify(admin, raced, _existing(admin, raced, deadline), deadline, cluster)
        _await_leaders(
            admin, [(s.name, s.partitions) for s in missing if s.name in created], deadline
        )

    unchanged = [s.name for s in specs if s.name in existing] + [s.name for s in raced]
    return ApplyReport(created=tuple(created), unchanged=tuple(unchanged))


@dataclass(frozen=True)
class _Existing:
    partitions: int
    replication_factor: int


def _existing(
    admin: AdminClient, specs: Sequence[TopicSpec], deadline: float
) -> dict[str, _Existing]:
    """Partition count and replication factor of each spec'd topic that exists."""
    found: dict[str, _Existing] = {}
    for spec in specs:
        metadata = _list_topic(admin, spec.name, deadline)
        topic = metadata.topics.get(spec.name)
        if topic is None or _is_unknown(topic.error):
            continue
        if topic.error is not None or not topic.partitions:
            # Being created right now (by someone else): read it once it has settled.
            _await_leaders(admin, [(spec.name, None)], deadline)
            topic = _list_topic(admin, spec.name, deadline).topics[spec.name]
        replicas = [len(p.replicas) for p in topic.partitions.values()]
        found[spec.name] = _Existing(len(topic.partitions), min(replicas, default=0))
    return found


def describe_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> dict[str, TopicSpec]:
    """What the cluster holds of the topics of ``specs``, to compare with them.

    Args:
        admin: a confluent-kafka admin client connected to the cluster.
        specs: the topics asked about.
        timeout: overall deadline in seconds.

    Returns:
        For each topic that exists: its partition count, replication factor and the
        values of the configs its spec sets (a broker reports many more). Missing
        topics are absent.

    Raises:
        BrokerUnavailableError: the broker did not answer within ``timeout``.
        ConfigurationError: the broker refused to describe a topic's configs.
    """
    deadline = time.monotonic() + timeout
    existing = _existing(admin, specs, deadline)
    return _actual(admin, [s for s in specs if s.name in existing], existing, deadline)


def _actual(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    existing: Mapping[str, _Existing],
    deadline: float,
) -> dict[str, TopicSpec]:
    """The existing topics of ``specs`` as the broker holds them (the spec's config names)."""
    configs: dict[str, dict[str, str]] = {s.name: {} for s in specs}
    configured = [s for s in specs if s.config]
    if configured:
        resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in configured]
        futures = admin.describe_configs(resources, request_timeout=_remaining(deadline))
        for spec, resource in zip(configured, resources, strict=True):
            try:
                entries = futures[resource].result()
            except KafkaException as exc:
                raise _admin_error(f"could not describe topic {spec.name}", exc.args[0]) from exc
            for name in spec.config:
                entry = entries.get(name)
                if entry is not None and entry.value is not None:
                    configs[spec.name][name] = entry.value
    return {
        spec.name: TopicSpec(
            spec.name,
            existing[spec.name].partitions,
            existing[spec.name].replication_factor,
            configs[spec.name],
        )
        for spec in specs
    }


def _verify(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    existing: Mapping[str, _Existing],
    deadline: float,
    cluster: str,
) -> None:
    """Raise :class:`TopologyMismatchError` listing every difference from ``specs``."""
    actual = _actual(admin, specs, existing, deadline)
    problems = [problem for spec in specs for problem in topic_differences(spec, actual[spec.name])]
    if problems:
        raise mismatch_error(problems, cluster)


def _await_leaders(
    admin: AdminClient, topics: Sequence[tuple[str, int | None]], deadline: float
) -> None:
    """Wait until each ``(name, partition count or None)`` topic has a leader everywhere."""
    for name, count in topics:
        while True:
            topic = _list_topic(admin, name, deadline).topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and topic.partitions
                and (count is None or len(topic.partitions) == count)
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                break
            if time.monotonic() >= deadline:
                raise BrokerUnavailableError(
                    f"topic {name} exists but not every partition has a leader yet"
                )
            time.sleep(0.05)


def _list_topic(admin: AdminClient, name: str, deadline: float) -> Any:
    try:
        return admin.list_topics(topic=name, timeout=_remaining(deadline))
    except KafkaException as exc:
        raise BrokerUnavailableError(f"no metadata for topic {name}: {exc.args[0]}") from exc


def _is_unknown(error: KafkaError | None) -> bool:
    return error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def _admin_error(what: str, error: KafkaError) -> Exception:
    if error.retriable() or error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT):
        return BrokerUnavailableError(f"{what}: {error.str()}")
    return ConfigurationError(f"{what}: {error.str()}")


def _remaining(deadline: float) -> float:
    # Never zero or negative: librdkafka reads -1 as "wait forever". An expired
    # deadline still gets one short attempt, and the caller's loop then gives up.
    return max(deadline - time.monotonic(), 0.1)


def delete_topics_and_groups(
    admin: AdminClient, topics: Sequence[str], groups: Sequence[str], timeout: float = 30.0
) -> None:
    """Delete ``topics`` and consumer ``groups``, best effort: failures are logged, not raised.

    For throw-away task hubs (benchmark runs), where a leftover costs disk
    space, not correctness.
    """
    futures = {
        **admin.delete_topics(list(topics), operation_timeout=timeout),
        **admin.delete_consumer_groups(list(groups), request_timeout=timeout),
    }
    for what, future in futures.items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:
            log.warning("could not delete %s: %s", what, exc)
