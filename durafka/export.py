"""``H.status`` as a table file, for the SQL engines users already run.

``durafka export status`` reads the compacted status topic once (read_committed,
the latest status of every instance, purged ones left out), and writes one row
per instance: Parquet (``pyarrow``, the ``export`` extra) or JSON Lines (no
dependency). DuckDB, Spark, Trino, pandas or polars read either::

    durafka export status --output status.parquet
    duckdb -c "SELECT name, runtime_status, count(*) FROM 'status.parquet' GROUP BY ALL"

Payloads (input, output, custom status) stay the JSON text they are on the
topic; times are UTC timestamps in milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from durafka.client.status_view import StatusView
from durafka.errors import ConfigurationError
from durafka.settings import Settings
from durafka.status import OrchestrationStatus
from durafka.topology import HubTopics
from durafka.transport.factory import open_transport
from durafka.transport.feeder import ThreadFeeder

__all__ = ["STATUS_COLUMNS", "ExportFormat", "export_status", "read_statuses", "status_rows"]


class ExportFormat(StrEnum):
    """The file formats of an export."""

    PARQUET = "parquet"
    JSONL = "jsonl"


#: The columns of a status export, in order, with their meaning (docs/topics.md repeats it).
STATUS_COLUMNS: dict[str, str] = {
    "instance_id": "the instance id (the record key)",
    "name": "the orchestration's registered name",
    "runtime_status": "PENDING, RUNNING, COMPLETED, FAILED, TERMINATED, SUSPENDED",
    "created_at": "when the execution started (UTC, ms)",
    "last_updated_at": "the last status change (UTC, ms)",
    "duration_ms": "last_updated_at - created_at of a finished instance, else null",
    "input": "the input, JSON text",
    "output": "the output (COMPLETED) or the reason (TERMINATED), JSON text",
    "custom_status": "the value of ctx.set_custom_status, JSON text",
    "failure_type": "the exception type of a FAILED instance",
    "failure_message": "its message",
    "parent_instance_id": "the parent of a sub-orchestration",
    "execution_id": "the execution (a new one per start of the id)",
}


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def status_rows(statuses: Iterable[OrchestrationStatus]) -> list[dict[str, Any]]:
    """One row per status (:data:`STATUS_COLUMNS`), ordered by creation time and id."""
    rows = []
    for s in sorted(statuses, key=lambda s: (s.created_at_ms, s.instance_id)):
        failure = s.failure_details
        rows.append(
            {
                "instance_id": s.instance_id,
                "name": s.name,
                "runtime_status": s.runtime_status.value,
                "created_at": _time(s.created_at_ms),
                "last_updated_at": _time(s.last_updated_at_ms),
                "duration_ms": s.last_updated_at_ms - s.created_at_ms
                if s.runtime_status.is_terminal
                else None,
                "input": _text(s.serialized_input),
                "output": _text(s.serialized_output),
                "custom_status": _text(s.serialized_custom_status),
                "failure_type": None if failure is None else failure.error_type,
                "failure_message": None if failure is None else failure.message,
                "parent_instance_id": s.parent_instance_id,
                "execution_id": s.execution_id,
            }
        )
    return rows


def read_statuses(settings: Settings, timeout: float = 60.0) -> list[OrchestrationStatus]:
    """The latest status of every instance of the task hub, as ``H.status`` holds them now.

    Raises:
        WaitTimeoutError: the topic was not read to its end within ``timeout`` seconds.
        DurafkaError: the topic is missing or the broker failed.
    """
    transport = open_transport(settings.bootstrap, settings.client_config)
    view = StatusView()
    feeder = ThreadFeeder(view, transport, HubTopics(settings.task_hub).status)
    try:
        feeder.start()
        view.wait_ready(timeout)
        return view.all()
    finally:
        feeder.stop()
        transport.close()


def export_status(
    settings: Settings,
    output: Path,
    fmt: ExportFormat = ExportFormat.PARQUET,
    *,
    timeout: float = 60.0,
) -> int:
    """Write the task hub's statuses to ``output``; returns the number of rows.

    Raises:
        ConfigurationError: Parquet without ``pyarrow`` installed.
        WaitTimeoutError: ``H.status`` was not read to its end within ``timeout`` seconds.
    """
    if fmt is ExportFormat.PARQUET:
        _pyarrow()  # before reading the topic: a missing dependency is known at once
    rows = status_rows(read_statuses(settings, timeout))
    if fmt is ExportFormat.PARQUET:
        _write_parquet(rows, output)
    else:
        _write_jsonl(rows, output)
    return len(rows)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigurationError(
            "a Parquet export needs pyarrow: pip install 'durafka[export]' "
            "(or export --format jsonl, which needs nothing)"
        ) from None
    return pyarrow


def _write_parquet(rows: list[dict[str, Any]], output: Path) -> None:
    pa = _pyarrow()
    timestamp = pa.timestamp("ms", tz="UTC")
    types = {"created_at": timestamp, "last_updated_at": timestamp, "duration_ms": pa.int64()}
    schema = pa.schema([(column, types.get(column, pa.string())) for column in STATUS_COLUMNS])
    pa.parquet.write_table(pa.Table.from_pylist(rows, schema=schema), output)


def _write_jsonl(rows: list[dict[str, Any]], output: Path) -> None:
    with output.open("w", encoding="utf-8") as out:
        for row in rows:
            line = {
                k: v.isoformat(timespec="milliseconds") if isinstance(v, datetime) else v
                for k, v in row.items()
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
