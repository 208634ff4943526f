"""A real single-node Apache Kafka broker for development and tests, without Docker.

The broker is Apache Kafka itself, resolved from Maven Central with ``mvn`` (the
pom is ``docker/kafka-dist/pom.xml``) into a per-version cache, once, and run
with the machine's Java 17 in KRaft mode (one process, broker and controller)
on 127.0.0.1. Everything about one broker lives in its data dir::

    <data_dir>/server.properties   written here, fast single-node settings
    <data_dir>/log4j2.properties   INFO for Kafka, WARN for the noisy parts
    <data_dir>/broker.log          the broker's log (stdout and stderr)
    <data_dir>/broker.pid          pid of the running JVM
    <data_dir>/kraft/              log.dirs: formatted KRaft storage and topics

Because the pid file and the properties live there, another process (the
``durafka dev-broker stop`` CLI) can find, check and stop a broker that this
one started.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from durafka.errors import BrokerUnavailableError
from durafka.resources import ResourceNotFoundError, resource_dir
from durafka.transport.admin import admin_client, broker_count

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "BrokerStatus",
    "Listener",
    "Liveness",
    "LocalBroker",
    "default_cache_dir",
    "ensure_distribution",
    "free_port",
    "wait_for_broker",
]

#: Newest release verified with both confluent-kafka and aiokafka, transactions included.
DEFAULT_KAFKA_VERSION = "4.1.1"

_HOST = "127.0.0.1"
_MAVEN_TIMEOUT_S = 900.0

#: Called between readiness attempts: a message once the broker is known dead, else None.
Liveness = Callable[[], str | None]


def default_cache_dir() -> Path:
    """Where distributions are cached: ``${XDG_CACHE_HOME:-~/.cache}/durafka``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "durafka"


def ensure_distribution(
    version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None
) -> Path:
    """Return the jar directory of Kafka ``version``, fetching it with Maven once.

    The jars go to ``<cache_dir>/kafka-<version>/libs``. Maven writes into a
    temporary sibling directory that is renamed into place only when complete,
    so an interrupted download never looks like a cached one and concurrent
    callers do not see each other's partial files.

    Args:
        version: the ``org.apache.kafka:kafka_2.13`` version.
        cache_dir: the cache root; :func:`default_cache_dir` when omitted.

    Returns:
        The directory to put on the classpath as ``<dir>/*``.

    Raises:
        BrokerUnavailableError: Maven is missing or the download failed.
    """
    root = cache_dir if cache_dir is not None else default_cache_dir()
    final = root / f"kafka-{version}"
    if _is_complete(final / "libs", version):
        return final / "libs"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".kafka-{version}-", dir=root))
    try:
        _run_maven(version, staging / "libs")
        if not _is_complete(staging / "libs", version):
            raise BrokerUnavailableError(
                f"Maven finished but {staging / 'libs'} holds no kafka_2.13-{version}.jar"
            )
        try:
            staging.rename(final)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not _is_complete(final / "libs", version):
                raise BrokerUnavailableError(
                    f"{final} exists but is incomplete; delete it and retry"
                ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "libs"


def _is_complete(libs: Path, version: str) -> bool:
    return (libs / f"kafka_2.13-{version}.jar").is_file()


def _run_maven(version: str, output_dir: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerUnavailableError(
            "Maven (mvn) is needed once to fetch Apache Kafka from Maven Central; install "
            "it, or point DURAFKA_BOOTSTRAP_SERVERS at a running broker"
        )
    try:
        pom = resource_dir("docker/kafka-dist") / "pom.xml"
    except ResourceNotFoundError as exc:
        raise BrokerUnavailableError(f"the broker pom is missing: {exc}") from exc
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        f"-DoutputDirectory={output_dir}",
        "-DincludeScope=runtime",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerUnavailableError(
            f"Maven did not fetch Kafka {version} within {_MAVEN_TIMEOUT_S:.0f} s"
        ) from exc
    if done.returncode != 0:
        output = _last_lines(done.stdout + done.stderr, 40)
        raise BrokerUnavailableError(
            f"Maven could not fetch Kafka {version} (exit {done.returncode}):\n{output}"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM binds: connections of a stopped broker in TIME_WAIT do not
        # make its port unusable, only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def wait_for_broker(bootstrap: str, timeout: float, alive: Liveness | None = None) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request.

    Args:
        bootstrap: ``host:port`` of the broker.
        timeout: seconds to wait.
        alive: called between attempts; returns an error message once the
            broker process is known to be dead, so a crash fails fast.

    Raises:
        BrokerUnavailableError: the deadline passed or ``alive`` reported death.
    """
    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.rpartition(":")
    admin = None
    while True:
        if alive is not None and (death := alive()) is not None:
            raise BrokerUnavailableError(death)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(f"no Kafka broker answered at {bootstrap} in {timeout} s")
        # A plain TCP probe first: librdkafka would log every refused connection.
        try:
            socket.create_connection((host, int(port)), timeout=min(remaining, 1.0)).close()
        except OSError:
            time.sleep(0.2)
            continue
        if admin is None:
            admin = admin_client(bootstrap, {"log_level": 0})
        if broker_count(admin, min(remaining, 2.0)):
            return


@dataclass(frozen=True)
class Listener:
    """A listener of a :class:`LocalBroker` besides its PLAINTEXT one (which it always has).

    Attributes:
        name: the listener name, e.g. ``"SSL"`` or ``"SCRAM"`` (letters, digits, ``_``).
        protocol: its security protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``
            or ``SASL_SSL``. Its settings (key stores, SASL mechanisms, JAAS) go in
            the broker's ``properties``, e.g. ``listener.name.scram.sasl.enabled.mechanisms``.
        port: its port; default: the previous one of the data dir if free, else a free one.
    """

    name: str
    protocol: str
    port: int | None = None

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum() or self.name.upper() in _RESERVED:
            raise ValueError(f"{self.name!r} cannot name an extra listener")
        if self.protocol.upper() not in _PROTOCOLS:
            raise ValueError(f"{self.protocol!r} is not one of {', '.join(sorted(_PROTOCOLS))}")


_RESERVED = frozenset({"PLAINTEXT", "CONTROLLER"})
_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` found.

    Attributes:
        running: a live broker JVM owns the data dir.
        pid: its process id, when running.
        bootstrap: its ``127.0.0.1:port`` address, when running.
        data_dir: the broker's data directory.
        log_file: the broker's log file.
    """

    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: Path
    log_file: Path


class LocalBroker:
    """A single-node KRaft Kafka broker on 127.0.0.1, owned by a data directory.

    Example::

        with LocalBroker(tmp_path / "kafka") as broker:
            producer = Producer({"bootstrap.servers": broker.bootstrap})

        # A SASL/SCRAM listener next to the PLAINTEXT one:
        scram = LocalBroker(
            tmp_path / "secure",
            listeners=[Listener("SCRAM", "SASL_PLAINTEXT")],
            properties={
                "listener.name.scram.sasl.enabled.mechanisms": "SCRAM-SHA-256",
                "listener.name.scram.scram-sha-256.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            },
            scram_users={"alice": "alice-secret"},
        )
        scram.start()
        scram.listener_bootstrap("SCRAM")  # "127.0.0.1:<port>"

    Args:
        data_dir: holds config, pid file, log and topic data; created if needed.
            Reusing it keeps topics and ports across restarts.
        port: client port; when omitted, the previous port of this data dir if
            still free, else one the OS picks.
        controller_port: KRaft controller port, chosen the same way.
        version: Kafka release, see :data:`DEFAULT_KAFKA_VERSION`.
        cache_dir: distribution cache root, see :func:`ensure_distribution`.
        listeners: more client listeners (TLS, SASL); the broker talks to itself
            over PLAINTEXT.
        properties: more ``server.properties`` lines (winning over durafka's).
        scram_users: SCRAM credentials (user to password, for SCRAM-SHA-256 and
            SCRAM-SHA-512) written into the storage when it is formatted, i.e.
            on the first start of a data dir.
    """

    #: JVM flags: a small heap and thread pools sized for a two-core machine.
    jvm_options: tuple[str, ...] = ("-Xms256m", "-Xmx2g", "-XX:ActiveProcessorCount=2")

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        controller_port: int | None = None,
        version: str = DEFAULT_KAFKA_VERSION,
        cache_dir: Path | None = None,
        *,
        listeners: Sequence[Listener] = (),
        properties: Mapping[str, str] | None = None,
        scram_users: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.cache_dir = cache_dir
        self.listeners = tuple(listeners)
        names = [listener.name.upper() for listener in self.listeners]
        if len(set(names)) != len(names):
            raise ValueError(f"listener names must differ: {names}")
        self.properties = dict(properties or {})
        self.scram_users = dict(scram_users or {})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def properties_file(self) -> Path:
        """The ``server.properties`` the broker runs with."""
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        """The broker's log (log4j2 output plus anything the JVM prints)."""
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        """Holds the pid of the running broker JVM."""
        return self.data_dir / "broker.pid"

    @property
    def bootstrap(self) -> str | None:
        """``127.0.0.1:port`` of the running broker, else ``None``."""
        return self.status().bootstrap

    def listener_bootstrap(self, name: str) -> str:
        """``127.0.0.1:port`` of the extra listener ``name`` (from the written config).

        Raises:
            KeyError: the broker has no such listener (or was never started).
        """
        port = _listener_ports(self.properties_file).get(name.upper())
        if port is None:
            raise KeyError(f"no listener {name!r} in {self.properties_file}")
        return f"{_HOST}:{port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> str:
        """Start the broker (or find it running) and wait until it answers.

        Args:
            timeout: seconds the launched broker has to answer a metadata
                request; the one-time Maven download is not counted.

        Returns:
            The bootstrap address, ``127.0.0.1:<port>``.

        Raises:
            BrokerUnavailableError: Java or Maven is missing, a port is taken,
                or the broker died or stayed silent during start-up (the
                message carries the tail of its log).
        """
        current = self.status()
        if current.running and current.bootstrap is not None and current.pid is not None:
            if self.port is not None and current.bootstrap != f"{_HOST}:{self.port}":
                raise BrokerUnavailableError(
                    f"a broker from {self.data_dir} already runs at {current.bootstrap}; "
                    "stop it before asking for another port"
                )
            wait_for_broker(current.bootstrap, timeout, self._liveness(current.pid))
            return current.bootstrap

        java = shutil.which("java")
        if java is None:
            raise BrokerUnavailableError("java is not on PATH; Kafka needs Java 17 or later")
        libs = ensure_distribution(self.version, self.cache_dir)
        ports = self._choose_ports()
        port = ports["PLAINTEXT"]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(ports)
        if not (self.data_dir / "kraft" / "meta.properties").is_file():
            self._format_storage(java, libs)

        with self.log_file.open("ab") as log:
            log.write(f"---- durafka: starting Kafka {self.version} at {time.ctime()}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [*self._java_command(java, libs), "kafka.Kafka", str(self.properties_file)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the caller does not hit the broker.
                start_new_session=True,
            )
        pid = self._process.pid
        _write_atomically(self.pid_file, f"{pid}\n")
        bootstrap = f"{_HOST}:{port}"
        try:
            wait_for_broker(bootstrap, timeout, self._liveness(pid))
        except BrokerUnavailableError as exc:
            self.stop()
            raise BrokerUnavailableError(
                f"Kafka broker in {self.data_dir} did not start: {exc}\n"
                f"---- last lines of {self.log_file}:\n{self.log_tail()}"
            ) from None
        return bootstrap

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL once ``timeout`` has passed.

        Works on a broker started by another process from the same data dir.

        Returns:
            Whether a running broker was stopped.
        """
        pid = self._running_pid()
        stopped = False
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                _signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
            stopped = True
        self.pid_file.unlink(missing_ok=True)
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        return stopped

    def status(self) -> BrokerStatus:
        """Whether a broker runs from this data dir, with its pid and address."""
        pid = self._running_pid()
        bootstrap = None
        if pid is not None:
            port = _listener_ports(self.properties_file).get("PLAINTEXT")
            bootstrap = None if port is None else f"{_HOST}:{port}"
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=bootstrap,
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def log_tail(self, n: int = 80) -> str:
        """The last ``n`` lines of the broker log ("" if there is none yet)."""
        try:
            with self.log_file.open("rb") as log:
                return _tail(log, n)
        except FileNotFoundError:
            return ""

    # -- internals ---------------------------------------------------------------

    def _java_command(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}{os.sep}*",
        ]

    def _choose_ports(self) -> dict[str, int]:
        """Listener name -> port, for PLAINTEXT, CONTROLLER and the extra listeners."""
        previous = _listener_ports(self.properties_file)
        wanted = [
            ("PLAINTEXT", self.port),
            ("CONTROLLER", self.controller_port),
            *((listener.name.upper(), listener.port) for listener in self.listeners),
        ]
        chosen: dict[str, int] = {}
        for name, given in wanted:
            if given is not None:
                if not _port_is_free(given):
                    raise BrokerUnavailableError(f"port {given} on {_HOST} is already in use")
                port = given
            else:
                old = previous.get(name)
                if old is not None and old not in chosen.values() and _port_is_free(old):
                    port = old
                else:
                    port = free_port()
                    while port in chosen.values():
                        port = free_port()
            chosen[name] = port
        return chosen

    def _write_config(self, ports: Mapping[str, int]) -> None:
        extra = [(listener.name.upper(), listener.protocol.upper()) for listener in self.listeners]
        all_protocols = [("PLAINTEXT", "PLAINTEXT"), ("CONTROLLER", "PLAINTEXT"), *extra]
        text = _SERVER_PROPERTIES.format(
            listeners=",".join(
                f"{name}://{_HOST}:{ports[name]}"
                for name in ("PLAINTEXT", "CONTROLLER", *(n for n, _ in extra))
            ),
            advertised=",".join(
                f"{name}://{_HOST}:{ports[name]}" for name in ("PLAINTEXT", *(n for n, _ in extra))
            ),
            protocols=",".join(f"{name}:{protocol}" for name, protocol in all_protocols),
            controller_port=ports["CONTROLLER"],
            log_dirs=self.data_dir / "kraft",
        )
        if self.properties:
            # Later lines win in a Java properties file.
            text += "\n# Given to LocalBroker(properties=...).\n" + "".join(
                f"{key}={value}\n" for key, value in self.properties.items()
            )
        _write_atomically(self.properties_file, text)
        _write_atomically(self.data_dir / "log4j2.properties", _LOG4J2_PROPERTIES)

    def _format_storage(self, java: str, libs: Path) -> None:
        command = [
            *self._java_command(java, libs),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _kafka_uuid(),
            "--config",
            str(self.properties_file),
        ]
        for user, password in self.scram_users.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                command += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise BrokerUnavailableError(
                f"formatting KRaft storage in {self.data_dir / 'kraft'} failed "
                f"(exit {done.returncode}):\n{_last_lines(done.stdout + done.stderr, 40)}"
            )

    def _running_pid(self) -> int | None:
        """The pid from the pid file if it is a live broker of this data dir."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _is_alive(pid) or not _runs_config(pid, self.properties_file):
            return None
        return pid

    def _liveness(self, pid: int) -> Liveness:
        def check() -> str | None:
            process = self._process
            if process is not None and process.pid == pid:
                code = process.poll()
                return None if code is None else f"the broker exited with code {code}"
            return None if _is_alive(pid) else f"the broker process {pid} is gone"

        return check

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        process = self._process
        if process is not None and process.pid == pid:
            # Our own child: wait() also reaps it (a zombie still answers kill 0).
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _is_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # "pid (comm) S ...": a zombie has exited; only its parent has not reaped it.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _runs_config(pid: int, properties: Path) -> bool:
    """Guard against a recycled pid: is ``pid`` a Kafka JVM running ``properties``?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no procfs (macOS): trust the pid file
    return b"kafka.Kafka" in argv and str(properties).encode() in argv


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
        os.kill(pid, sig)


def _listener_ports(properties: Path) -> dict[str, int]:
    """Listener name -> port, from a ``server.properties`` written by this module."""
    try:
        lines = properties.read_text().splitlines()
    except FileNotFoundError:
        return {}
    ports: dict[str, int] = {}
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() != "listeners":
            continue
        for listener in value.split(","):
            name, _, address = listener.strip().partition("://")
            port = address.rpartition(":")[2]
            if port.isdigit():
                ports[name] = int(port)
    return ports


def _kafka_uuid() -> str:
    """A cluster id as ``kafka-storage random-uuid`` makes it, without a JVM start."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's Uuid.randomUuid also rejects ids starting with '-' (they read as flags).
        if not text.startswith("-"):
            return text


def _write_atomically(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    scratch.replace(path)


def _tail(stream: BinaryIO, n: int) -> str:
    """The last ``n`` lines of ``stream``, reading backwards in blocks."""
    stream.seek(0, os.SEEK_END)
    position = stream.tell()
    block = 16384
    data = b""
    while position > 0 and data.count(b"\n") <= n:
        step = min(block, position)
        position -= step
        stream.seek(position)
        data = stream.read(step) + data
    return _last_lines(data.decode("utf-8", errors="replace"), n)


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


_SERVER_PROPERTIES = """\
# Written by durafka.dev.broker: a one-node KRaft dev/test broker on loopback.
# Rewritten on every start; edit durafka/dev/broker.py instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocols}
log.dirs={log_dirs}

# One node: every internal topic has one replica, or transactions and groups hang.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1

# Fast and strict for tests: no join delay, no topic appears by accident,
# short session timeouts allowed, abandoned transactions aborted within seconds.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
group.min.session.timeout.ms=1000
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
transaction.max.timeout.ms=3600000

# A small machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
"""

_LOG4J2_PROPERTIES = """\
# Written by durafka.dev.broker. The broker's stdout is <data_dir>/broker.log.
status = warn
# Kafka logs its own shutdown; log4j must not stop first.
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT

# Noisy at INFO: per-request, per-partition and per-segment chatter, config dumps.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel$
logger.channel.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""
