"""Topology specs and their idempotent application to a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__ upstream
    AdminClient,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from durafka.errors import ConfigurationError, TopologyMismatchError
from durafka.topology import (
    CO_PARTITIONED,
    DEFAULT_SPEC_PATH,
    HUB_TOPIC_KEYS,
    HubTopics,
    TopicSpec,
    load_hub_spec,
    topic_differences,
)
from durafka.transport.admin import apply_topics
from tests.support.kafka import admin_client


def _partition_counts(admin: AdminClient, names: list[str]) -> dict[str, int]:
    metadata = admin.list_topics(timeout=10)
    return {name: len(metadata.topics[name].partitions) for name in names}


def _configs(admin: AdminClient, topic: str) -> dict[str, Any]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries: dict[str, Any] = admin.describe_configs([resource])[resource].result(10)
    return entries


# -- the spec ------------------------------------------------------------------------


def test_default_spec_describes_every_hub_topic_with_the_hub_prefix() -> None:
    specs = load_hub_spec("orders")
    topics = HubTopics("orders")
    assert [s.name for s in specs] == [
        topics.orchestrations,
        topics.activities,
        topics.changelog,
        topics.status,
        topics.dead_letters,
        topics.entities,
    ]
    by_key = dict(zip(HUB_TOPIC_KEYS, specs, strict=True))
    assert {by_key[k].partitions for k in CO_PARTITIONED} == {12}
    assert by_key["state-changelog"].config["cleanup.policy"] == "compact"
    assert by_key["status"].config["cleanup.policy"] == "compact"
    assert by_key["entities"].config["cleanup.policy"] == "compact"
    for key in ("orchestrations", "activities", "dead-letters"):
        assert by_key[key].config["cleanup.policy"] == "delete"
        assert int(by_key[key].config["retention.ms"]) > 0
    assert all(s.config["min.insync.replicas"] == "1" for s in specs)


def test_partitions_override_keeps_a_topic_with_its_own_count() -> None:
    specs = {s.name: s for s in load_hub_spec("h", partitions=4, replication_factor=1)}
    assert specs["h.orchestrations"].partitions == 4
    assert specs["h.activities"].partitions == 4  # no count of its own: follows the default
    assert specs["h.dead-letters"].partitions == 1  # its own count in default.toml


def test_production_spec_needs_enough_replicas_for_its_min_isr() -> None:
    production = DEFAULT_SPEC_PATH.with_name("production.toml")
    assert {s.replication_factor for s in load_hub_spec("h", production)} == {3}
    with pytest.raises(ConfigurationError, match=r"min.insync.replicas=2 .* replication factor 1"):
        load_hub_spec("h", production, replication_factor=1)


def _write_spec(tmp_path: Path, status_extra: str = "", top: str = "") -> Path:
    text = DEFAULT_SPEC_PATH.read_text() + top
    text = text.replace(
        "[topics.status.config]", f"[topics.status]\n{status_extra}\n[topics.status.config]"
    )
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_unequal_co_partitioned_counts_are_rejected(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, status_extra="partitions = 8")
    with pytest.raises(ConfigurationError, match="co-partitioned") as caught:
        load_hub_spec("h", spec)
    assert "h.status=8" in str(caught.value) and "h.orchestrations=12" in str(caught.value)
    # The override sets all three, so it is consistent again.
    assert {s.partitions for s in load_hub_spec("h", spec, partitions=8)[:4]} == {8}


@pytest.mark.parametrize(
    ("status_extra", "top", "message"),
    [
        ("partitons = 8", "", "unknown key.*partitons"),
        ("partitions = 0", "", "positive integer"),
        ("", "\n[topics.audit]\npartitions = 1\n", "unknown key.*audit"),
        ("", "\n[extra]\n", "unknown key.*extra"),
        ("", "\n[defaults]\n", "not valid TOML"),  # a table defined twice
    ],
)
def test_malformed_specs_are_rejected(
    tmp_path: Path, status_extra: str, top: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_hub_spec("h", _write_spec(tmp_path, status_extra, top))


def test_a_spec_must_name_all_six_topics(tmp_path: Path) -> None:
    text = DEFAULT_SPEC_PATH.read_text()
    (tmp_path / "spec.toml").write_text(text[: text.index("[topics.dead-letters]")])
    with pytest.raises(ConfigurationError, match="dead-letters"):
        load_hub_spec("h", tmp_path / "spec.toml")


@pytest.mark.parametrize("hub", ["", "has space", "slash/y", "x" * 240])
def test_illegal_hub_names_are_rejected(hub: str) -> None:
    with pytest.raises(ConfigurationError, match="not a legal Kafka topic prefix"):
        load_hub_spec(hub)


def test_a_missing_spec_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no topology spec at"):
        load_hub_spec("h", tmp_path / "absent.toml")


# -- against the broker ----------------------------------------------------------------


def test_apply_creates_everything_then_is_idempotent(kafka_bootstrap: str, hub: str) -> None:
    admin = admin_client(kafka_bootstrap)
    specs = load_hub_spec(hub, partitions=4)
    names = [s.name for s in specs]

    first = apply_topics(admin, specs)
    assert sorted(first.created) == sorted(names) and first.unchanged == ()
    assert _partition_counts(admin, names) == {s.name: s.partitions for s in specs}

    second = apply_topics(admin, specs)
    assert second.created == () and sorted(second.unchanged) == sorted(names)


def test_compacted_and_deleted_topics_get_their_configs(
    kafka_bootstrap: str, kafka_hub_topics: list[TopicSpec], hub: str
) -> None:
    admin = admin_client(kafka_bootstrap)
    topics = HubTopics(hub)
    for name in (topics.changelog, topics.status):
        entries = _configs(admin, name)
        assert entries["cleanup.policy"].value == "compact"
        # Set on the topic itself, not inherited from a broker default.
        assert entries["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert entries["min.insync.replicas"].value == "1"
    orchestrations = _configs(admin, topics.orchestrations)
    assert orchestrations["cleanup.policy"].value == "delete"
    assert orchestrations["retention.ms"].value == "604800000"
    assert orchestrations["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_only_missing_topics_are_created(kafka_bootstrap: str, hub: str) -> None:
    admin = admin_client(kafka_bootstrap)
    specs = load_hub_spec(hub, partitions=4)
    apply_topics(admin, specs[:2])
    report = apply_topics(admin, specs)
    assert sorted(report.unchanged) == sorted(s.name for s in specs[:2])
    assert sorted(report.created) == sorted(s.name for s in specs[2:])


def test_partition_count_mismatch_is_reported_and_nothing_changes(
    kafka_bootstrap: str, kafka_hub_topics: list[TopicSpec], hub: str
) -> None:
    admin = admin_client(kafka_bootstrap)
    with pytest.raises(TopologyMismatchError) as caught:
        apply_topics(admin, load_hub_spec(hub, partitions=6))
    message = str(caught.value)
    for name in (HubTopics(hub).orchestrations, HubTopics(hub).changelog):
        assert f"{name}: partition count expected 6, actual 4" in message
    names = [s.name for s in kafka_hub_topics]
    assert _partition_counts(admin, names) == {s.name: s.partitions for s in kafka_hub_topics}


def test_config_mismatch_is_reported(
    kafka_bootstrap: str, kafka_hub_topics: list[TopicSpec], hub: str
) -> None:
    status = HubTopics(hub).status
    drifted = [
        TopicSpec(
            s.name, s.partitions, s.replication_factor, {**s.config, "cleanup.policy": "delete"}
        )
        if s.name == status
        else s
        for s in kafka_hub_topics
    ]
    with pytest.raises(TopologyMismatchError) as caught:
        apply_topics(admin_client(kafka_bootstrap), drifted)
    assert f"{status}: config cleanup.policy expected 'delete', actual 'compact'" in str(
        caught.value
    )


def test_replication_factor_mismatch_is_reported(
    kafka_bootstrap: str, kafka_hub_topics: list[TopicSpec], hub: str
) -> None:
    with pytest.raises(TopologyMismatchError, match="replication factor expected 2, actual 1"):
        apply_topics(
            admin_client(kafka_bootstrap), load_hub_spec(hub, partitions=4, replication_factor=2)
        )


def test_a_topic_the_broker_cannot_create_is_a_configuration_error(
    kafka_bootstrap: str, hub: str
) -> None:
    # One broker cannot hold three replicas.
    specs = load_hub_spec(hub, partitions=1, replication_factor=3)
    with pytest.raises(ConfigurationError, match="could not create topic"):
        apply_topics(admin_client(kafka_bootstrap), specs)


class _LateMetadata:
    """An admin client whose first metadata look misses topics that exist.

    That is what a concurrent ``apply`` looks like: between our look and our
    create, someone else created the topics.
    """

    def __init__(self, admin: AdminClient) -> None:
        self._admin = admin
        self.create_errors: list[int] = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        metadata = self._admin.list_topics(topic=topic, timeout=timeout)
        if not self.create_errors:
            metadata.topics.pop(topic, None)
        return metadata

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> Any:
        futures = self._admin.create_topics(new_topics, **kwargs)
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                self.create_errors.append(exc.args[0].code())
        return self._admin.create_topics(new_topics, **kwargs)

    def describe_configs(self, *args: Any, **kwargs: Any) -> Any:
        return self._admin.describe_configs(*args, **kwargs)


def test_topics_created_concurrently_are_verified_not_failed(
    kafka_bootstrap: str, kafka_hub_topics: list[TopicSpec]
) -> None:
    late = _LateMetadata(admin_client(kafka_bootstrap))
    report = apply_topics(late, kafka_hub_topics)  # type: ignore[arg-type]
    assert late.create_errors == [KafkaError.TOPIC_ALREADY_EXISTS] * len(kafka_hub_topics)
    assert report.created == ()
    assert sorted(report.unchanged) == sorted(s.name for s in kafka_hub_topics)


def test_a_concurrently_created_topic_that_differs_is_still_a_mismatch(
    kafka_bootstrap: str, kafka_hub_topics: list[TopicSpec], hub: str
) -> None:
    late = _LateMetadata(admin_client(kafka_bootstrap))
    with pytest.raises(TopologyMismatchError, match="partition count expected 6, actual 4"):
        apply_topics(late, load_hub_spec(hub, partitions=6))  # type: ignore[arg-type]


def test_topic_differences_lists_each_difference_and_only_spec_configs() -> None:
    spec = TopicSpec("t", 4, 3, {"cleanup.policy": "compact", "retention.ms": "100"})
    same = TopicSpec("t", 4, 3, {"cleanup.policy": "compact", "retention.ms": "100", "x": "y"})
    assert topic_differences(spec, same) == []
    drifted = TopicSpec("t", 6, 1, {"cleanup.policy": "delete"})
    assert topic_differences(spec, drifted) == [
        "t: partition count expected 4, actual 6",
        "t: replication factor expected 3, actual 1",
        "t: config cleanup.policy expected 'compact', actual 'delete'",
        "t: config retention.ms expected '100', actual None",
    ]
