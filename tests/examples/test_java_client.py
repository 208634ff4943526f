"""The Java example (examples/java/) against the parcels app on the real broker.

The Java program uses only ``org.apache.avro:avro`` and ``org.apache.kafka:kafka-clients``
and the schemas of ``schemas/standalone/``: it starts an orchestration, raises its
event, reads its final status, signals an entity and reads its state, as
docs/topics.md tells another service to. A schema or encoding change that breaks
other languages fails here. Maven's repository (``~/.m2``) is kept between runs: the
first build on a machine downloads the two libraries and the build plugins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import durafka
from durafka.partitioning import partition_for
from durafka.status import RuntimeStatus
from examples import parcels
from tests.support.apps import make_app

REPO_ROOT = Path(__file__).resolve().parents[2]
JAVA_PROJECT = REPO_ROOT / "examples" / "java"
BUILD_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def java_client_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/java`` built with Maven: the runnable jar.

    Built in a copy of the project, so that a developer's build in
    ``examples/java/target`` and this one never write the same files.
    """
    missing = [tool for tool in ("mvn", "java") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the Java example needs Java 17 and Maven; not found: {missing}")
    project = tmp_path_factory.mktemp("java") / "project"
    shutil.copytree(JAVA_PROJECT, project, ignore=shutil.ignore_patterns("target"))
    done = subprocess.run(
        ["mvn", "-B", "-q", "package", f"-Ddurafka.schemas={REPO_ROOT / 'schemas' / 'standalone'}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"mvn package failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    jar = project / "target" / "parcels-client.jar"
    assert jar.is_file(), f"mvn package made no {jar}"
    return jar


@pytest.mark.timeout(BUILD_TIMEOUT + 300)
def test_a_java_service_starts_raises_waits_and_signals(
    kafka_bootstrap: str, tmp_path: Path, java_client_jar: Path
) -> None:
    hub = f"j{uuid.uuid4().hex[:10]}"
    app = make_app(kafka_bootstrap, hub, tmp_path / "state", parcels.app.registry)
    parcel = f"p-{uuid.uuid4().hex[:8]}"
    try:
        with app.running(), app.sync_client() as client:
            done = subprocess.run(
                ["java", "-jar", str(java_client_jar), kafka_bootstrap, hub, parcel],
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert done.returncode == 0, f"the Java client failed:\n{done.stdout}\n{done.stderr}"
            lines = done.stdout.splitlines()
            started = re.fullmatch(
                rf"started deliver {parcel} \(execution ([0-9a-f]{{32}})\) on partition (\d+)",
                lines[0],
            )
            assert started is not None, lines
            execution_id, partition = started.group(1), int(started.group(2))
            # Java's default partitioner put the start where durafka puts the instance.
            assert partition == partition_for(parcel.encode(), app.settings.partitions)
            receipt = f"parcel {parcel} picked up by Bo"
            assert lines[1:] == [
                "raised picked_up",
                f'COMPLETED {{"parcel_id":"{parcel}","courier":"Bo","receipt":"{receipt}"}}',
                "signalled @Shelf@A1 put 3",
                "@Shelf@A1 state 3",
            ]

            # durafka's own client sees the same execution and entity.
            status = client.get_status(parcel)
            assert status is not None and status.runtime_status is RuntimeStatus.COMPLETED
            assert status.execution_id == execution_id
            assert client.wait_for_completion(parcel, timeout=5) == parcels.Delivery(
                parcel, "Bo", receipt
            )
            shelf = client.get_entity(durafka.EntityId("Shelf", "A1"))
            assert shelf is not None and shelf.state == 3
    finally:
        app.close()
