"""Settings of an app, from arguments or ``DURAFKA_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from durafka.codec.payload import DEFAULT_MAX_PAYLOAD_BYTES


class Settings(BaseSettings):
    """Everything an app needs to run; every field can be set as ``DURAFKA_<FIELD>``.

    Example:
        >>> Settings(task_hub="orders", bootstrap_servers="127.0.0.1:9092")
        >>> # or: DURAFKA_BOOTSTRAP_SERVERS=kafka:9092 DURAFKA_PARTITIONS=12 durafka run app:app
    """

    model_config = SettingsConfigDict(env_prefix="DURAFKA_", extra="forbid")

    task_hub: str = Field("durafka", pattern=r"^[A-Za-z0-9._-]+$", description="Topic prefix.")
    bootstrap_servers: str = Field(
        "memory://", description="Kafka bootstrap servers, or memory:// for embedded mode."
    )
    state_dir: Path = Field(Path(".durafka/state"), description="Where the RocksDB stores live.")
    partitions: int = Field(8, ge=1, description="Partitions of the co-partitioned topics.")
    replication_factor: int = Field(1, ge=1)
    max_concurrent_activities: int = Field(256, ge=1)
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
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1)
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
    topology_spec: Path | None = Field(
        None,
        description=(
            "The topology spec (TOML) of the task hub's topics: what App.ensure_topics "
            "creates and checks, and the source of topic configs the broker does not "
            "reveal (default: topology/default.toml)."
        ),
    )
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka settings for every Kafka client (e.g. security); a 'producer.', "
            "'consumer.' or 'admin.' prefix gives a setting to that kind of client only."
        ),
    )
    use_memory_state: bool | None = Field(
        None, description="Keep partition state in memory (default: only on memory://)."
    )

    @property
    def is_memory(self) -> bool:
        """Whether this app runs on the in-process ``memory://`` transport."""
        return self.bootstrap_servers.startswith("memory://")
