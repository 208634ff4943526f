"""Reading ``H.status`` without durafka: the analytics example, and SQL over an export.

Both read the statuses of one task hub on the real broker and must agree with
what durafka's own client sees: the counts per orchestration and runtime status,
and the p50/p99 of the durations of finished instances.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

import durafka
from durafka.cli import app as cli
from durafka.client import Client
from durafka.status import OrchestrationStatus, RuntimeStatus
from examples import parcels
from tests.support.apps import make_app
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "analytics" / "status_stats.py"


def test_the_analytics_example_imports_only_confluent_kafka_fastavro_and_the_stdlib() -> None:
    tree = ast.parse(SCRIPT.read_text())
    modules = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules - set(sys.stdlib_module_names) == {"confluent_kafka", "fastavro"}


def _percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _expected(statuses: list[OrchestrationStatus]) -> dict[str, Any]:
    """What both readers must report, from durafka's own view of the same topic."""
    out: dict[str, Any] = {}
    for name in sorted({s.name for s in statuses}):
        mine = [s for s in statuses if s.name == name]
        counts: dict[str, int] = {}
        for s in mine:
            counts[s.runtime_status.value] = counts.get(s.runtime_status.value, 0) + 1
        durations = [
            s.last_updated_at_ms - s.created_at_ms for s in mine if s.runtime_status.is_terminal
        ]
        out[name] = {
            "statuses": dict(sorted(counts.items())),
            "finished": len(durations),
            "p50_ms": _percentile(durations, 50) if durations else None,
            "p99_ms": _percentile(durations, 99) if durations else None,
        }
    return out


def _make_history(client: Client, foreign: Client) -> list[str]:
    """Instances in every state; returns the id of one that was purged."""
    done = [client.start_new(parcels.deliver, parcels.Parcel(f"p-{i}", "Ada")) for i in range(5)]
    waiting = [client.start_new(parcels.deliver, parcels.Parcel("w", "Bo")) for _ in range(2)]
    stopped = client.start_new(parcels.deliver, parcels.Parcel("t", "Cy"))
    # Mistakes of another service (no registry, so no client-side checks): both fail.
    bad_input = foreign.start_new("deliver", {"parcel": "p-x"})
    unknown = foreign.start_new("no_such_orchestration", 1)
    for iid in done:
        client.raise_event(iid, "picked_up", parcels.PickUp("Bo"))
    client.terminate(stopped, "cancelled")
    for iid in [*done, stopped, bad_input, unknown]:
        client.wait_for_status(iid, timeout=60)
    for iid in waiting:
        client.status_view.wait_for(
            iid, lambda s: s.runtime_status is RuntimeStatus.RUNNING, timeout=60
        )
    client.purge(done[0])
    wait_until(lambda: client.get_status(done[0]) is None, timeout=60)
    failed = client.get_status(bad_input)
    assert failed is not None and failed.runtime_status is RuntimeStatus.FAILED
    assert failed.failure_details is not None
    assert failed.failure_details.error_type == "durafka.errors.SerializationError"
    return [done[0]]


def test_the_example_and_sql_over_an_export_agree_with_the_client(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    hub = f"a{uuid.uuid4().hex[:10]}"
    app = make_app(kafka_bootstrap, hub, tmp_path / "state", parcels.app.registry)
    try:
        with app.running(), app.sync_client() as client:
            with Client(app.settings, None, app.transport) as foreign:
                [purged] = _make_history(client, foreign)
            statuses = client.status_view.all()
    finally:
        app.close()
    expected = _expected(statuses)
    assert expected["deliver"]["statuses"] == {
        "COMPLETED": 4,
        "FAILED": 1,
        "RUNNING": 2,
        "TERMINATED": 1,
    }
    assert expected["no_such_orchestration"]["statuses"] == {"FAILED": 1}

    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--bootstrap", kafka_bootstrap, "--hub", hub, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"orchestrations": expected, "unreadable": 0}

    # The same questions in SQL, over a Parquet and a JSON Lines export.
    for fmt in ("parquet", "jsonl"):
        path = tmp_path / f"status.{fmt}"
        result = CliRunner().invoke(
            cli,
            ["export", "status", "-o", str(path), "--format", fmt, "--hub", hub],
            env={"DURAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        )
        assert result.exit_code == 0, result.output
        assert f"wrote {len(statuses)} statuses" in result.output
        source = f"'{path}'" if fmt == "parquet" else f"read_json_auto('{path}')"
        counts = duckdb.sql(
            f"SELECT name, runtime_status, count(*) FROM {source} GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert counts == sorted(
            (name, status, n)
            for name, entry in expected.items()
            for status, n in entry["statuses"].items()
        )
        quantiles = duckdb.sql(
            "SELECT name, quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.99) "
            f"FROM {source} WHERE duration_ms IS NOT NULL GROUP BY name ORDER BY name"
        ).fetchall()
        assert quantiles == [
            (name, pytest.approx(e["p50_ms"]), pytest.approx(e["p99_ms"]))
            for name, e in expected.items()
        ]
        purged_rows = f"SELECT count(*) FROM {source} WHERE instance_id = '{purged}'"
        assert duckdb.sql(purged_rows).fetchall() == [(0,)]
        failure = duckdb.sql(
            f"SELECT failure_type FROM {source} WHERE name = 'no_such_orchestration'"
        ).fetchall()
        assert failure == [("durafka.errors.UnknownFunctionError",)]


def test_a_parquet_export_without_pyarrow_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    result = CliRunner().invoke(
        cli,
        ["export", "status", "-o", str(tmp_path / "s.parquet")],
        env={"DURAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},  # never reached
    )
    assert result.exit_code == 1
    assert "pip install 'durafka[export]'" in result.output
    assert not (tmp_path / "s.parquet").exists()


def test_statuses_export_as_rows_of_documented_columns(tmp_path: Path) -> None:
    from durafka.export import STATUS_COLUMNS, ExportFormat, export_status

    app = durafka.App(f"x{uuid.uuid4().hex[:8]}", bootstrap_servers=f"memory://{uuid.uuid4().hex}")
    app.registry = parcels.app.registry
    with app.running(), app.sync_client() as client:
        iid = client.start_new(parcels.deliver, parcels.Parcel("p-1", "Ada"), instance_id="p-1")
        client.raise_event(iid, "picked_up", parcels.PickUp("Bo"))
        client.wait_for_completion(iid, timeout=30)
        path = tmp_path / "s.parquet"
        assert export_status(app.settings, path, ExportFormat.PARQUET) == 1
    app.close()
    relation = duckdb.sql(f"SELECT * FROM '{path}'")
    assert relation.columns == list(STATUS_COLUMNS)
    [values] = relation.fetchall()
    row = dict(zip(relation.columns, values, strict=True))
    assert (row["instance_id"], row["name"], row["runtime_status"]) == (
        "p-1",
        "deliver",
        "COMPLETED",
    )
    assert json.loads(row["output"])["courier"] == "Bo"
    assert json.loads(row["input"]) == {"parcel_id": "p-1", "recipient": "Ada"}
    assert row["duration_ms"] >= 0 and row["created_at"].tzinfo is not None
