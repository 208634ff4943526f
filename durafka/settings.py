"""Settings of an app, from arguments or ``DURAFKA_*`` environment variables.

docs/configuration.md lists them (``python -m durafka.configdoc`` writes it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from durafka.codec.payload import DEFAULT_MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from durafka.topology import TopicSpec

__all__ = ["BOOTSTRAP_ENV", "DEPRECATED_BOOTSTRAP_ENV", "MEMORY_BOOTSTRAP", "Settings"]

log = logging.getLogger(__name__)

#: The variable that names the Kafka cluster, for every command and every app.
BOOTSTRAP_ENV = "DURAFKA_BOOTSTRAP_SERVERS"
#: Its old name (``durafka topology`` and ``bench`` read it): still read, with a warning.
DEPRECATED_BOOTSTRAP_ENV = "DURAFKA_BOOTSTRAP"
#: The in-process broker (:mod:`durafka.transport.memory`), chosen only explicitly.
MEMORY_BOOTSTRAP = "memory://"

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


class Settings(BaseSettings):
    """Everything an app needs to run; every field can be set as ``DURAFKA_<FIELD>``.

    Example:
        >>> Settings(task_hub="orders", bootstrap_servers="127.0.0.1:9092")
        >>> # or: DURAFKA_BOOTSTRAP_SERVERS=kafka:9092 DURAFKA_PARTITIONS=12 durafka run app:app
    """

    # DURAFKA_X= (empty) means "not set", so a cleared variable restores the default.
    model_config = SettingsConfigDict(env_prefix="DURAFKA_", extra="forbid", env_ignore_empty=True)

    task_hub: str = Field(
        "durafka",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The task hub: prefix of its topics, consumer groups and transactional ids.",
    )
    bootstrap_servers: str | None = Field(
        None,
        description=(
            "Kafka bootstrap servers (host:port,...), or memory:// for the in-process broker "
            "(not durable, invisible to other processes). Unset, the durafka commands use the "
            "dev broker running from their directory, else refuse to run, and an App in your "
            "own code uses memory:// with a warning. The old name "
            "DURAFKA_BOOTSTRAP is read too, with a deprecation warning."
        ),
    )
    state_dir: Path = Field(
        Path(".durafka/state"),
        description="Where a processor's RocksDB stores and the roles' stable ids live.",
    )
    topology: Path | None = Field(
        None,
        description=(
            "The topology spec of the task hub's topics (default: topology/default.toml). "
            "`durafka topology apply` and every role read the same one."
        ),
    )
    partitions: int | None = Field(
        None,
        ge=1,
        description=(
            "Partitions of the co-partitioned topics, overriding the topology spec's "
            "(default.toml: 12). Only for a new hub: an existing hub with another count is "
            "an error, never changed."
        ),
    )
    replication_factor: int | None = Field(
        None, ge=1, description="Replication factor of every topic, overriding the topology spec's."
    )
    max_concurrent_activities: int = Field(
        256, ge=1, description="Activities a worker runs at once at most."
    )
    max_concurrent_orchestrations: int = Field(
        1000,
        ge=1,
        description=(
            "Instances (and entities) a processor steps in one batch at most; records of "
            "further instances wait for the next batch, in partition order (Durable "
            "Functions' MaxConcurrentOrchestrations)."
        ),
    )
    cache_size: int = Field(
        10_000, ge=0, description="Live orchestrations kept in memory (0: replay always)."
    )
    batch_size: int = Field(
        500,
        ge=1,
        description=(
            "Records per processor transaction at most. A processor commits as soon as it "
            "has processed what one poll returned (no waiting for more): batches grow with "
            "the load, and a lone record is committed right away."
        ),
    )
    local_activities: bool = Field(
        True,
        description=(
            "When a processor and a worker share a process, run activities next to the "
            "processor and apply their results in the same batch (one transaction)."
        ),
    )
    local_activity_wait_ms: int = Field(
        50, ge=0, description="How long a batch waits for its local activities at most."
    )
    max_payload_bytes: int = Field(
        DEFAULT_MAX_PAYLOAD_BYTES,
        ge=1,
        description=(
            "Largest encoded user payload (input, output, event data, custom status); larger "
            "is refused where it enters, before anything is written."
        ),
    )
    gc_young_threshold: int = Field(
        50_000,
        ge=0,
        description=(
            "Allocations between young-generation garbage collections while a processor or "
            "worker runs in this process (0: leave Python's setting alone). Python's default "
            "(700) made collection ~30% of a busy processor's time."
        ),
    )
    transaction_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description=(
            "How long the broker keeps a transaction of a processor or worker open before "
            "aborting it. Transactions last only for a batch's commit (milliseconds); the "
            "timeout bounds how long read_committed readers stall on the open transaction of "
            "a process that died and was not restarted on the same state_dir. Kafka Streams' "
            "default for exactly-once is the same 10 s."
        ),
    )
    commit_timeout_ms: int = Field(
        60_000,
        ge=1,
        description=(
            "How long a processor keeps resuming a commit whose outcome is unknown (the "
            "broker or transaction coordinator unreachable) before it recreates its producer "
            "and restores the partitions from the changelog (Kafka Streams' task.timeout.ms)."
        ),
    )
    restore_records_per_iteration: int = Field(
        10_000,
        ge=1,
        description=(
            "Changelog records a processor restores per loop iteration at most. Restore runs "
            "between the polls of the group consumer, a slice at a time, so however long it "
            "takes the processor keeps its group membership (max.poll.interval.ms) and keeps "
            "processing the partitions that are ready."
        ),
    )
    state_cleanup_delay_ms: int | None = Field(
        600_000,
        ge=0,
        description=(
            "How long the state of a partition this process no longer owns is kept before it "
            "is deleted (Kafka Streams' state.cleanup.delay.ms); None: never. A partition "
            "that comes back sooner restores only what it missed."
        ),
    )
    finished_retention_ms: int | None = Field(
        7 * 24 * 3600 * 1000,
        ge=0,
        description=(
            "How long a completed, failed or terminated instance is kept before it is purged "
            "automatically (its history, state and status), so that the changelog holds what "
            "is live and restores stay bounded; 0 or None: never. Entities are not purged. "
            "TestEnvironment does not purge unless the app sets it."
        ),
    )
    max_activity_deliveries: int = Field(
        5,
        ge=1,
        description=(
            "A worker fails an activity task (PoisonTaskError, never retried) instead of "
            "running it again once it was delivered this many times without a result: its "
            "worker died or lost the partition while running it each time (an activity that "
            "crashes its process, runs out of memory, or is killed)."
        ),
    )
    unknown_activity_grace_ms: int = Field(
        300_000,
        ge=0,
        description=(
            "How long a worker keeps a task of an activity it does not register, waiting for "
            "a worker that does (a rolling upgrade: the partition moves to an upgraded worker), "
            "before it fails the task with UnknownFunctionError. Counted from the task's "
            "scheduling time; 0 fails such tasks at once."
        ),
    )
    watchdog_grace_ms: int = Field(
        30_000,
        ge=1000,
        description=(
            "How long past its own timeout a blocking Kafka call of a processor or worker may "
            "run before the watchdog calls it stuck: `durafka processor|worker|run` then exits "
            "with status 75 for its supervisor to restart it; an embedded runner stops its roles "
            "and raises StuckCallError (see docs/architecture.md, 'The watchdog')."
        ),
    )
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka settings for every Kafka client (e.g. security), as JSON in the "
            "variable; a 'producer.', 'consumer.' or 'admin.' prefix gives a setting to that "
            "kind of client only. The asyncio client accepts the same settings."
        ),
    )
    use_memory_state: bool | None = Field(
        None, description="Keep partition state in memory (default: only on memory://)."
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "Serve Prometheus metrics (/metrics) and the Kubernetes probes /healthz and "
            "/readyz of this process's processor and worker on this port (0: any free port; "
            "unset: not served). The CLI's --metrics-port sets it."
        ),
    )
    metrics_host: str = Field(
        "0.0.0.0", description="The address metrics_port listens on (0.0.0.0: every interface)."
    )
    health_timeout_ms: int = Field(
        120_000,
        ge=1000,
        description=(
            "/healthz fails once a role's loop has made no progress for this long (stuck in a "
            "Kafka call, a store write or user code). Longer than commit_timeout_ms, during "
            "which a processor keeps resuming a commit whose outcome is unknown."
        ),
    )
    tracing: bool = Field(
        False,
        description=(
            "Emit OpenTelemetry spans (orchestration executions, steps, activities) to the "
            "global tracer provider, with their context in Kafka headers; needs the 'tracing' "
            "extra (opentelemetry-sdk) and a configured provider."
        ),
    )

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # DURAFKA_BOOTSTRAP_SERVERS= (empty) means "not set", not a cluster named "".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``DURAFKA_*``, then the deprecated ``DURAFKA_BOOTSTRAP``."""
        return (
            init_settings,
            env_settings,
            _DeprecatedBootstrap(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def bootstrap(self) -> str:
        """The bootstrap to connect to: ``bootstrap_servers``, or ``memory://`` when unset.

        Unset is for an app in the user's own code (a demo, a unit test); it is
        logged once per process as a warning, because nothing on ``memory://``
        survives the process or is seen by another one. The commands look for
        the dev broker of their directory instead, else refuse to run
        (:func:`durafka.cli.options.with_cluster`).
        """
        if self.bootstrap_servers is not None:
            return self.bootstrap_servers
        _warn_once(
            "unset",
            f"{BOOTSTRAP_ENV} is not set: running on the in-process {MEMORY_BOOTSTRAP} broker "
            "(nothing is durable, no other process can see it). Set it to your Kafka "
            f"cluster's host:port, or to {MEMORY_BOOTSTRAP} to say this is what you want.",
        )
        return MEMORY_BOOTSTRAP

    @property
    def is_memory(self) -> bool:
        """Whether this app runs on the in-process ``memory://`` transport."""
        return self.bootstrap_servers is None or self.bootstrap_servers.startswith(MEMORY_BOOTSTRAP)

    def partition_count(self) -> int:
        """Partitions of the co-partitioned topics: ``partitions``, else the topology spec's."""
        if self.partitions is not None:
            return self.partitions
        from durafka.topology import HubTopics

        orchestrations = HubTopics(self.task_hub).orchestrations
        return next(s.partitions for s in self.topic_specs() if s.name == orchestrations)

    def topic_specs(self) -> list[TopicSpec]:
        """The task hub's topics: the ``topology`` spec with this app's overrides.

        The one place a role, a client and ``durafka topology apply`` get them,
        so all agree on the partition count.
        """
        from durafka.topology import load_hub_spec

        return load_hub_spec(
            self.task_hub,
            self.topology,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
        )


class _DeprecatedBootstrap(PydanticBaseSettingsSource):
    """``DURAFKA_BOOTSTRAP`` as ``bootstrap_servers`` when nothing else sets it, with a warning."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the one variable itself."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(DEPRECATED_BOOTSTRAP_ENV, "").strip()
        current = self.current_state.get("bootstrap_servers")
        if not value or (current is not None and str(current).strip()):
            return {}
        _warn_once(
            "deprecated",
            f"{DEPRECATED_BOOTSTRAP_ENV} is deprecated: use {BOOTSTRAP_ENV}={value} instead",
        )
        return {"bootstrap_servers": value}
