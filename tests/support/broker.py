"""Find or start the one Kafka broker a test session runs against.

In order: ``DURAFKA_BOOTSTRAP_SERVERS`` or ``DURAFKA_BOOTSTRAP`` (a broker
someone else runs; its log file may be named by ``DURAFKA_BROKER_LOG``);
``DURAFKA_TEST_BROKER=podman``: a broker container started through
testcontainers over Podman's Docker API (:mod:`durafka.dev.kafka_container`, no
Docker engine needed); a Docker engine, through testcontainers, running the
official ``apache/kafka`` image; else durafka's own
:class:`~durafka.dev.broker.LocalBroker` (Java and Maven) in a temp dir.

The harness takes those variables out of the environment (:func:`take_broker_env`):
the apps under test must get their bootstrap from the test, never from the
shell that ran pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from durafka.dev.broker import DEFAULT_KAFKA_VERSION, LocalBroker, free_port, wait_for_broker
from durafka.dev.kafka_container import kafka_environment, podman_kafka
from durafka.errors import BrokerUnavailableError, DurafkaError

DOCKER_IMAGE = f"apache/kafka:{DEFAULT_KAFKA_VERSION}"


#: Variables naming a running broker for the session (the first set wins).
BROKER_ENV = ("DURAFKA_BOOTSTRAP_SERVERS", "DURAFKA_BOOTSTRAP")


@dataclass
class BrokerHandle:
    """A broker for the session: where it is, how to read its log, how to let it go.

    ``shared``: someone else runs it (named by :data:`BROKER_ENV`), so the
    session leaves its topics alone.
    """

    bootstrap: str
    origin: str
    log_tail: Callable[[int], str]
    stop: Callable[[], object]
    shared: bool = False


def take_broker_env(environ: MutableMapping[str, str]) -> tuple[str, str] | None:
    """Remove :data:`BROKER_ENV` from ``environ``; the first one set, as ``(name, value)``."""
    found = [(name, environ.pop(name, "")) for name in BROKER_ENV]
    return next(((name, value) for name, value in found if value), None)


def acquire_broker(scratch: Path, shared: tuple[str, str] | None) -> BrokerHandle:
    """Return a reachable broker, starting one if needed.

    Args:
        scratch: where a broker started here keeps its data.
        shared: ``(variable, bootstrap)`` of a running broker to use instead.

    Raises:
        BrokerUnavailableError: with every reason a broker could not be had.
    """
    if shared is not None:
        name, bootstrap = shared
        try:
            wait_for_broker(bootstrap, timeout=30.0)
        except BrokerUnavailableError as exc:
            raise BrokerUnavailableError(f"{name}={bootstrap}: {exc}") from None
        return BrokerHandle(bootstrap, name, _file_tail_env(), lambda: None, shared=True)
    if os.environ.get("DURAFKA_TEST_BROKER") == "podman":
        return podman_broker(scratch / "podman")
    reasons: list[str] = []
    if _docker_answers():
        try:
            return _start_container()
        except Exception as exc:  # any Docker trouble: fall back to the local broker
            reasons.append(f"Docker ({DOCKER_IMAGE}): {exc}")
    else:
        reasons.append("Docker: no engine answered `docker info`")
    try:
        broker = LocalBroker(scratch / "kafka")
        started = broker.start()
        return BrokerHandle(
            started, f"local broker in {broker.data_dir}", broker.log_tail, broker.stop
        )
    except BrokerUnavailableError as exc:
        reasons.append(f"local broker (Java + Maven): {exc}")
    raise BrokerUnavailableError(
        "no Kafka broker for the tests. Set DURAFKA_BOOTSTRAP_SERVERS=host:port, start Docker, or "
        "install Java 17 and Maven. Tried:\n- " + "\n- ".join(reasons)
    )


def podman_broker(workdir: Path) -> BrokerHandle:
    """A broker container started through testcontainers over Podman (installed if missing).

    Raises:
        BrokerUnavailableError: Podman, the image or the broker failed.
    """
    context = podman_kafka(install=True, workdir=workdir)
    try:
        kafka = context.__enter__()
    except DurafkaError as exc:
        raise BrokerUnavailableError(f"Kafka through testcontainers on Podman: {exc}") from exc
    return BrokerHandle(
        kafka.bootstrap,
        f"testcontainers on Podman ({kafka.image})",
        kafka.log_tail,
        lambda: context.__exit__(None, None, None),
    )


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _start_container() -> BrokerHandle:
    # testcontainers' KafkaContainer drives Confluent images only; the official
    # image is configured by KAFKA_* variables (replacing its whole default config).
    from testcontainers.core.container import DockerContainer

    # Same port inside and out, so the advertised address works from the host.
    port = free_port()
    container = DockerContainer(DOCKER_IMAGE).with_bind_ports(port, port)
    for key, value in kafka_environment(port, 9093, bind="").items():
        container = container.with_env(key, value)
    container.start()
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_for_broker(bootstrap, timeout=90.0)
    except BrokerUnavailableError:
        container.stop()
        raise

    def tail(n: int) -> str:
        out, err = container.get_logs()
        return "\n".join((out + err).decode("utf-8", "replace").splitlines()[-n:])

    return BrokerHandle(bootstrap, f"Docker container {DOCKER_IMAGE}", tail, container.stop)


def _file_tail_env() -> Callable[[int], str]:
    path = os.environ.get("DURAFKA_BROKER_LOG")

    def tail(n: int) -> str:
        if not path:
            return "(broker log unknown: set DURAFKA_BROKER_LOG to its file)"
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(cannot read {path}: {exc})"
        return "\n".join(lines[-n:])

    return tail
