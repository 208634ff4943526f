"""A Kafka broker in a container for tests: testcontainers over Podman's Docker API.

Development tooling. testcontainers-python speaks the Docker Engine API; Podman
serves the same API on a socket (``podman system service``), so tests start
containers through testcontainers on a machine without a Docker engine. The
broker image is built here (:func:`~durafka.dev.podman.ensure_kafka_image`: no
registry is needed) and configured like the official ``apache/kafka`` image,
by ``KAFKA_*`` variables (:func:`kafka_environment`).

Example (what the ``durafka_kafka`` pytest fixture does, see
:mod:`durafka.dev.pytest_plugin`)::

    with podman_kafka(workdir=tmp_path) as kafka:
        app = durafka.App("orders", bootstrap_servers=kafka.bootstrap)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from durafka.dev.broker import free_port, wait_for_broker
from durafka.dev.podman import Podman, ensure_kafka_image, ensure_podman
from durafka.errors import BrokerUnavailableError, ContainerUnavailableError

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

__all__ = ["KafkaContainer", "PodmanSocket", "kafka_environment", "podman_kafka"]

_SOCKET_WAIT_S = 30.0


def kafka_environment(port: int, controller_port: int, bind: str = "127.0.0.1") -> dict[str, str]:
    """The ``KAFKA_*`` variables of a one-node KRaft test broker, reached at 127.0.0.1:``port``.

    One replica for every internal topic (else transactions and groups hang), no
    rebalance delay, no topic created by accident, abandoned transactions aborted
    within seconds: the settings of :class:`~durafka.dev.broker.LocalBroker`.

    Args:
        port: the client port.
        controller_port: the KRaft controller's port.
        bind: the address the listeners bind (``""``: every interface, for a
            container whose port is published rather than on the host network).
    """
    host = bind or "localhost"
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://{bind}:{port},CONTROLLER://{bind}:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@{host}:{controller_port}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "1000",
        "KAFKA_TRANSACTION_MAX_TIMEOUT_MS": "3600000",
    }


class PodmanSocket:
    """Podman's Docker-compatible API on a unix socket, for testcontainers.

    The service gets its own ``containers.conf`` (``CONTAINERS_CONF``) with the
    runtime and rlimits of :class:`~durafka.dev.podman.Podman`, since an API
    client cannot pass podman's command-line flags.

    Args:
        podman: the podman to serve.
        directory: holds the socket and the config; a temporary one when omitted.
    """

    def __init__(self, podman: Podman, directory: Path | None = None) -> None:
        self.podman = podman
        self.directory = Path(directory or tempfile.mkdtemp(prefix="durafka-podman-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``DOCKER_HOST`` of the service: ``unix:///.../podman.sock``."""
        return f"unix://{self.directory / 'podman.sock'}"

    def start(self) -> str:
        """Start the service and wait for its socket; return :attr:`url`.

        Raises:
            ContainerUnavailableError: the service exited or never answered.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "containers.conf"
        ulimits = ", ".join(f'"{limit}"' for limit in self.podman.ulimits)
        runtime = f'runtime = "{self.podman.runtime}"\n' if self.podman.runtime else ""
        conf.write_text(f"[containers]\ndefault_ulimits = [{ulimits}]\n[engine]\n{runtime}")
        sock = self.directory / "podman.sock"
        sock.unlink(missing_ok=True)
        log = (self.directory / "service.log").open("wb")
        self._process = subprocess.Popen(
            [self.podman.executable, "system", "service", "--time=0", self.url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.podman.env, "CONTAINERS_CONF": str(conf)},
        )
        log.close()
        deadline = time.monotonic() + _SOCKET_WAIT_S
        while not sock.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "service.log").read_text(errors="replace")[-2000:]
                raise ContainerUnavailableError(f"podman system service did not start:\n{tail}")
            time.sleep(0.1)
        return self.url

    def stop(self) -> None:
        """Stop the service (containers it started keep running: stop them first)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class KafkaContainer:
    """A broker started by :func:`start_kafka_container`.

    Attributes:
        bootstrap: ``127.0.0.1:<port>``.
        image: the image it runs.
        container: the testcontainers object (``get_logs()``, ``stop()``).
    """

    bootstrap: str
    image: str
    container: DockerContainer

    def log_tail(self, n: int) -> str:
        """The last ``n`` lines of the broker's output."""
        out, err = self.container.get_logs()
        return "\n".join((out + err).decode("utf-8", "replace").splitlines()[-n:])

    def stop(self) -> None:
        """Stop and remove the container."""
        self.container.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_kafka_container(
    image: str, docker_host: str | None = None, timeout: float = 90.0
) -> KafkaContainer:
    """Start ``image`` through testcontainers on the host network and wait for it.

    Args:
        image: a Kafka image configured by ``KAFKA_*`` (``apache/kafka`` or
            :func:`~durafka.dev.podman.ensure_kafka_image`'s).
        docker_host: the Docker API to use (``DOCKER_HOST`` when omitted).
        timeout: seconds the broker has to answer a metadata request.

    Raises:
        BrokerUnavailableError: it did not answer in time (its log tail says why).
    """
    from testcontainers.core.config import testcontainers_config

    # Ryuk, testcontainers' reaper, is an image that cannot be pulled here; the
    # caller stops the container.
    testcontainers_config.ryuk_disabled = True
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    client: dict[str, Any] = {}
    if docker_host is not None:
        client["environment"] = {**os.environ, "DOCKER_HOST": docker_host}
    container = _container_class()(image, docker_client_kw=client, network_mode="host")
    for key, value in kafka_environment(port, controller_port).items():
        container = container.with_env(key, value)
    container.start()
    kafka = KafkaContainer(f"127.0.0.1:{port}", image, container)
    try:
        wait_for_broker(kafka.bootstrap, timeout)
    except BrokerUnavailableError as exc:
        tail = kafka.log_tail(40)
        kafka.stop()
        raise BrokerUnavailableError(f"{exc}; container log:\n{tail}") from None
    return kafka


def _container_class() -> type[DockerContainer]:
    from testcontainers.core.container import DockerContainer

    return DockerContainer


@contextlib.contextmanager
def podman_kafka(*, install: bool = False, workdir: Path | None = None) -> Iterator[KafkaContainer]:
    """A Kafka broker in a Podman container, started through testcontainers.

    Builds the Kafka image if needed (once per machine), serves Podman's API on a
    socket in ``workdir``, starts the broker, and stops both afterwards.

    Args:
        install: install podman, runc and debootstrap with apt when missing.
        workdir: where the API socket lives (a temporary directory when omitted).

    Raises:
        ContainerUnavailableError: Podman or the image is missing or failed.
        BrokerUnavailableError: the broker did not start.
    """
    podman = ensure_podman(install=install)
    image = ensure_kafka_image(podman)
    with PodmanSocket(podman, workdir) as docker_host:
        kafka = start_kafka_container(image, docker_host)
        try:
            yield kafka
        finally:
            kafka.stop()
