"""Topic layout of a task hub, applied idempotently, and Kafka-compatible partitioning.

A task hub ``H`` owns six topics (see docs/architecture.md): ``H.orchestrations``,
``H.activities``, ``H.state-changelog``, ``H.status``, ``H.dead-letters`` and
``H.entities``.
Their partition counts, replication factor and topic configs come from a TOML
spec in ``topology/`` (``topology/default.toml`` unless told otherwise);
:func:`load_hub_spec` turns it into :class:`TopicSpec` values and
:func:`apply_topics` makes the broker match them: it creates what is missing,
leaves what matches, and refuses (:class:`~durafka.errors.TopologyMismatchError`)
to touch a topic that differs, because a changed partition count silently
breaks co-partitioning and key placement.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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

from durafka.errors import BrokerUnavailableError, ConfigurationError, TopologyMismatchError
from durafka.partitioning import murmur2, partition_for
from durafka.resources import resource_dir

__all__ = [
    "CO_PARTITIONED",
    "DEFAULT_SPEC_PATH",
    "HUB_TOPIC_KEYS",
    "ApplyReport",
    "HubTopics",
    "TopicSpec",
    "apply_topics",
    "load_hub_spec",
    "murmur2",
    "partition_for",
]

#: The spec used when none is given: ``topology/default.toml`` (of the checkout or the wheel).
DEFAULT_SPEC_PATH = resource_dir("topology") / "default.toml"

#: Spec keys of a hub's topics, in the order :func:`load_hub_spec` returns them.
HUB_TOPIC_KEYS = (
    "orchestrations",
    "activities",
    "state-changelog",
    "status",
    "dead-letters",
    "entities",
)

#: Topics whose partition ``p`` belong together (state of input partition ``p``).
CO_PARTITIONED = ("orchestrations", "state-changelog", "status", "entities")

# Kafka's own rule (org.apache.kafka.common.internals.Topic): 249 legal characters.
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_TOPIC_LEN = 249
_TOPIC_KEYS = frozenset({"partitions", "replication_factor", "config"})


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partition count, replication factor and topic configs."""

    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HubTopics:
    """Every name task hub ``hub`` uses: topics, consumer groups, transactional ids.

    The one place they are derived (see docs/architecture.md, "Topics").
    """

    hub: str

    @property
    def orchestrations(self) -> str:
        return f"{self.hub}.orchestrations"

    @property
    def activities(self) -> str:
        return f"{self.hub}.activities"

    @property
    def changelog(self) -> str:
        return f"{self.hub}.state-changelog"

    @property
    def status(self) -> str:
        return f"{self.hub}.status"

    @property
    def dead_letters(self) -> str:
        return f"{self.hub}.dead-letters"

    @property
    def entities(self) -> str:
        """The compacted topic of entity states (key: entity id, ``None``: deleted)."""
        return f"{self.hub}.entities"

    @property
    def processor_group(self) -> str:
        """The consumer group of processors (offsets of ``H.orchestrations``)."""
        return f"{self.hub}.processors"

    @property
    def worker_group(self) -> str:
        """The consumer group of activity workers (offsets of ``H.activities``)."""
        return f"{self.hub}.workers"

    def processor_transactional_id(self, processor_id: str) -> str:
        """The ``transactional.id`` of a group-mode processor process."""
        return f"{self.hub}.processor.{processor_id}"

    def partition_transactional_id(self, partition: int) -> str:
        """The ``transactional.id`` that owns input partition ``partition`` in static mode."""
        return f"{self.hub}.processor.p{partition}"

    def worker_transactional_id(self, worker_id: str) -> str:
        """The ``transactional.id`` of an activity worker process."""
        return f"{self.hub}.worker.{worker_id}"

    def by_key(self) -> dict[str, str]:
        """Topic names keyed by their spec key (``"state-changelog"``, ...)."""
        return {
            "orchestrations": self.orchestrations,
            "activities": self.activities,
            "state-changelog": self.changelog,
            "status": self.status,
            "dead-letters": self.dead_letters,
            "entities": self.entities,
        }


@dataclass(frozen=True)
class ApplyReport:
    """What :func:`apply_topics` did.

    Attributes:
        created: topics created by this call.
        unchanged: topics that already existed and match their spec.
    """

    created: tuple[str, ...]
    unchanged: tuple[str, ...]


def load_hub_spec(
    hub: str,
    path: Path | None = None,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[TopicSpec]:
    """Read the topic spec of task hub ``hub``.

    Args:
        hub: the task hub name, the prefix of every topic name.
        path: a TOML spec; ``topology/default.toml`` when omitted.
        partitions: overrides the partition count of the co-partitioned topics
            (orchestrations, state-changelog, status, entities) and of every
            topic that does not set its own count.
        replication_factor: overrides the replication factor of every topic.

    Returns:
        One :class:`TopicSpec` per hub topic, in :data:`HUB_TOPIC_KEYS` order.

    Raises:
        ConfigurationError: the hub name is not a legal topic prefix, the spec
            is missing, malformed or incomplete, the co-partitioned topics do
            not share one partition count, or ``min.insync.replicas`` exceeds
            the replication factor.
    """
    names = _hub_names(hub)
    spec_path = path if path is not None else DEFAULT_SPEC_PATH
    raw = _read_toml(spec_path)
    where = str(spec_path)

    _reject_unknown(raw, {"defaults", "topics"}, where)
    defaults = _table(raw.get("defaults", {}), f"{where}: [defaults]")
    _reject_unknown(defaults, _TOPIC_KEYS, f"{where}: [defaults]")
    topics = _table(raw.get("topics", {}), f"{where}: [topics]")
    _reject_unknown(topics, set(HUB_TOPIC_KEYS), f"{where}: [topics]")
    missing = [key for key in HUB_TOPIC_KEYS if key not in topics]
    if missing:
        raise ConfigurationError(
            f"{where}: no [topics.<name>] table for {', '.join(missing)}; "
            f"a hub spec must describe all of {', '.join(HUB_TOPIC_KEYS)}"
        )
    default_config = _config(defaults.get("config", {}), f"{where}: [defaults.config]")

    specs: list[TopicSpec] = []
    co_partitioned: dict[str, int] = {}
    for key in HUB_TOPIC_KEYS:
        ctx = f"{where}: [topics.{key}]"
        topic = _table(topics[key], ctx)
        _reject_unknown(topic, _TOPIC_KEYS, ctx)
        if partitions is not None and (key in CO_PARTITIONED or "partitions" not in topic):
            count = _positive_int(partitions, "partitions override")
        else:
            count = _positive_int(topic.get("partitions", defaults.get("partitions")), ctx)
        if replication_factor is not None:
            rf = _positive_int(replication_factor, "replication_factor override")
        else:
            rf = _positive_int(
                topic.get("replication_factor", defaults.get("replication_factor", 1)), ctx
            )
        config = {**default_config, **_config(topic.get("config", {}), f"{ctx}.config")}
        _check_min_isr(names[key], config, rf)
        specs.append(TopicSpec(names[key], count, rf, config))
        if key in CO_PARTITIONED:
            co_partitioned[names[key]] = count

    if len(set(co_partitioned.values())) != 1:
        shown = ", ".join(f"{name}={n}" for name, n in co_partitioned.items())
        raise ConfigurationError(
            f"{where}: co-partitioned topics must have equal partition counts, got {shown}; "
            "partition p of the changelog and status holds the state of input partition p"
        )
    return specs


def apply_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> ApplyReport:
    """Make the broker hold ``specs``: create what is missing, verify the rest.

    Nothing is created when any existing topic differs from its spec. A topic
    created concurrently by someone else (``TOPIC_ALREADY_EXISTS``) is verified
    like any existing one. Returns once every created topic has a leader for
    each partition, so producers can use them right away.

    Args:
        admin: a confluent-kafka admin client connected to the cluster.
        specs: the topics, e.g. from :func:`load_hub_spec`.
        timeout: overall deadline in seconds.

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
    _verify(admin, [s for s in specs if s.name in existing], existing, deadline)

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
            _verify(admin, raced, _existing(admin, raced, deadline), deadline)
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


def _verify(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    existing: Mapping[str, _Existing],
    deadline: float,
) -> None:
    """Raise :class:`TopologyMismatchError` listing every difference from ``specs``."""
    problems: list[str] = []
    for spec in specs:
        actual = existing[spec.name]
        if actual.partitions != spec.partitions:
            problems.append(
                f"{spec.name}: partition count expected {spec.partitions}, "
                f"actual {actual.partitions}"
            )
        if actual.replication_factor != spec.replication_factor:
            problems.append(
                f"{spec.name}: replication factor expected {spec.replication_factor}, "
                f"actual {actual.replication_factor}"
            )
    configured = [s for s in specs if s.config]
    if configured:
        resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in configured]
        futures = admin.describe_configs(resources, request_timeout=_remaining(deadline))
        for spec, resource in zip(configured, resources, strict=True):
            try:
                entries = futures[resource].result()
            except KafkaException as exc:
                raise _admin_error(f"could not describe topic {spec.name}", exc.args[0]) from exc
            for name, expected in spec.config.items():
                entry = entries.get(name)
                value = None if entry is None else entry.value
                if value != expected:
                    problems.append(
                        f"{spec.name}: config {name} expected {expected!r}, actual {value!r}"
                    )
    if problems:
        raise TopologyMismatchError(
            "existing topics differ from the topology spec (nothing was changed):\n  "
            + "\n  ".join(problems)
            + "\nAlign the spec with the cluster, or migrate the topics deliberately "
            "(a new partition count moves keys and breaks co-partitioning)."
        )


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


def _hub_names(hub: str) -> dict[str, str]:
    names = HubTopics(hub).by_key()
    longest = max(names.values(), key=len)
    if not _LEGAL_TOPIC.fullmatch(hub) or len(longest) > _MAX_TOPIC_LEN:
        raise ConfigurationError(
            f"task hub name {hub!r} is not a legal Kafka topic prefix: use letters, digits, "
            f"'.', '_' and '-', short enough that {longest!r} has at most {_MAX_TOPIC_LEN} chars"
        )
    return names


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"no topology spec at {path}; pass the path of a spec such as topology/default.toml"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a table")
    return value


def _reject_unknown(
    table: Mapping[str, object], allowed: set[str] | frozenset[str], where: str
) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _config(value: object, where: str) -> dict[str, str]:
    table = _table(value, where)
    config: dict[str, str] = {}
    for name, item in table.items():
        if isinstance(item, bool):
            config[name] = "true" if item else "false"
        elif isinstance(item, int | str):
            config[name] = str(item)
        else:
            raise ConfigurationError(f"{where}: {name} must be a string or an integer")
    return config


def _check_min_isr(topic: str, config: Mapping[str, str], replication_factor: int) -> None:
    value = config.get("min.insync.replicas")
    if value is None:
        return
    if not value.isdigit() or not 1 <= int(value) <= replication_factor:
        raise ConfigurationError(
            f"{topic}: min.insync.replicas={value} must be between 1 and the replication "
            f"factor {replication_factor}, or every acks=all write would fail"
        )
