"""What a benchmark run measures and how the system under test is set up."""

from __future__ import annotations

import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from durafka.settings import Settings

__all__ = ["BenchConfig", "ProcessMode", "Workload"]


class Workload(StrEnum):
    """The workloads of issue 4 (see docs/performance.md)."""

    W1 = "W1"
    """Hello: one activity per orchestration; throughput and one-at-a-time latency."""
    W2 = "W2"
    """Sequence: five activities in a row per orchestration."""
    W3 = "W3"
    """Fan-out: one orchestration runs M activities at once and sums them."""
    W4 = "W4"
    """Entity counter: signals spread over 100 counters."""


class ProcessMode(StrEnum):
    """Where the processors and the worker run."""

    EMBEDDED = "embedded"
    """In the benchmark's own process, on threads (``app.run()``)."""
    SEPARATE = "separate"
    """As ``durafka processor`` / ``durafka worker`` child processes (production layout)."""


class BenchConfig(BaseModel):
    """A benchmark: which workloads, on which transport, with which settings.

    Settings left as ``None`` keep durafka's defaults (:class:`~durafka.settings.Settings`),
    so a run measures what users get unless a knob is turned on purpose.

    Example:
        >>> BenchConfig(workloads=(Workload.W1,), transport="kafka",
        ...             bootstrap="127.0.0.1:9092", processes=ProcessMode.SEPARATE)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workloads: tuple[Workload, ...] = tuple(Workload)
    transport: Literal["memory", "kafka"] = "memory"
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers (kafka only).")
    hub_prefix: str = Field(
        "bench", pattern=r"^[A-Za-z0-9._-]+$", description="Each run's task hub is <prefix>-<id>."
    )
    w1_n: int = Field(20_000, ge=1, description="W1 throughput: instances started at once.")
    latency_n: int = Field(500, ge=0, description="W1 latency: instances run one at a time.")
    w2_n: int = Field(5_000, ge=1, description="W2: instances of the 5-step sequence.")
    w3_m: int = Field(1_000, ge=1, description="W3: activities fanned out by one orchestration.")
    w4_counters: int = Field(100, ge=1, description="W4: entity counters signalled.")
    w4_signals: int = Field(10_000, ge=1, description="W4: signals sent in total.")
    partitions: int = Field(8, ge=1, description="Partitions of the co-partitioned topics.")
    processes: ProcessMode = ProcessMode.EMBEDDED
    processors: int = Field(1, ge=1, description="Processor processes (separate mode).")
    runs: int = Field(1, ge=1, description="Repetitions, each on a fresh task hub.")
    batch_size: int | None = Field(None, ge=1)
    cache_size: int | None = Field(None, ge=0)
    max_concurrent_activities: int | None = Field(None, ge=1)
    max_in_flight: int = Field(
        1_000, ge=1, description="Starts awaiting their acknowledgement at once (throughput)."
    )
    timeout: float = Field(600.0, gt=0, description="Seconds a workload may take at most.")
    startup_timeout: float = Field(
        120.0, gt=0, description="Seconds the roles may take to serve every partition."
    )
    keep_topics: bool = Field(False, description="Leave each run's Kafka topics on the broker.")
    work_dir: Path | None = Field(
        None, description="Parent of each run's state and log folder (default: the temp dir)."
    )

    @model_validator(mode="after")
    def _check(self) -> BenchConfig:
        if not self.workloads:
            raise ValueError("no workload selected")
        if self.transport == "kafka" and not self.bootstrap:
            raise ValueError(
                "--transport kafka needs a cluster: set DURAFKA_BOOTSTRAP_SERVERS=host:port "
                "or pass --bootstrap host:port"
            )
        if self.processes is ProcessMode.SEPARATE:
            if self.transport == "memory":
                raise ValueError(
                    "memory:// lives inside one process: separate processes need "
                    "--transport kafka (or use --processes embedded)"
                )
            if self.processors > self.partitions:
                raise ValueError(
                    f"{self.processors} processors cannot split {self.partitions} partitions; "
                    "use at most one processor per partition"
                )
        elif self.processors != 1:
            raise ValueError("embedded mode runs one processor; use --processes separate")
        return self

    def new_bootstrap(self) -> str:
        """The bootstrap of a fresh run: a new ``memory://`` broker, or the Kafka servers."""
        if self.transport == "memory":
            return f"memory://bench-{uuid.uuid4().hex[:12]}"
        assert self.bootstrap is not None  # checked by the model
        return self.bootstrap

    def settings_for(self, task_hub: str, bootstrap: str, state_dir: Path) -> Settings:
        """The app settings of one run, with this benchmark's overrides applied."""
        overrides: dict[str, Any] = {
            name: value
            for name in (
                "batch_size",
                "cache_size",
                "max_concurrent_activities",
            )
            if (value := getattr(self, name)) is not None
        }
        return Settings(
            task_hub=task_hub,
            bootstrap_servers=bootstrap,
            state_dir=state_dir,
            partitions=self.partitions,
            **overrides,
        )
