"""Reaching a Kafka cluster: a one-line cause when it cannot be reached, quiet clients.

librdkafka retries a refused connection, a failed authentication or a failed
TLS handshake forever, logs every attempt (to stderr unless told otherwise)
and finally answers a metadata request with "Broker transport failure". So
every confluent-kafka client durafka makes gets:

* ``error_cb`` and ``logger``: the :class:`ClientErrors` of its transport. It
  keeps the most telling connection problem seen in either (authentication or
  TLS over a protocol mismatch over a refused connection), passes librdkafka's
  own log on to :data:`LIBRDKAFKA_LOGGER` (the CLI shows it only with
  ``--log-level debug``), and logs client errors only once the cluster has
  been reached;

and :func:`await_cluster` waits (at most :data:`CONNECT_TIMEOUT_S`) for the
cluster to answer before a transport's first client is used: failed
authentication, TLS and protocol mismatches end the wait at once, a refused or
unresolved address at the deadline, each as a
:class:`~durafka.errors.ClusterConnectionError` naming the cause.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException

from durafka.errors import ClusterConnectionError, ConnectionCause

__all__ = [
    "CLIENT_LIBRARY_LOGGERS",
    "CONNECT_TIMEOUT_S",
    "LIBRDKAFKA_LOGGER",
    "ClientErrors",
    "await_cluster",
    "classify",
    "connection_error",
]

log = logging.getLogger(__name__)

#: The logger librdkafka's own log lines go to (given as every client's ``logger``).
LIBRDKAFKA_LOGGER: Final = "durafka.librdkafka"
#: Loggers of the Kafka client libraries: retry chatter, shown by the CLI only when debugging.
CLIENT_LIBRARY_LOGGERS: Final = (LIBRDKAFKA_LOGGER, "aiokafka")
#: How long a transport waits for its cluster before failing with the cause.
CONNECT_TIMEOUT_S: Final = 6.0

_REPEAT_AFTER_S: Final = 60.0
#: librdkafka's "<proto>://host:port/<broker id or 'bootstrap'>: " before a message.
_BROKER_PREFIX: Final = re.compile(r"^\S*?:\d+/\w+: ")
#: librdkafka's "[thrd:<broker>]: " before a log line.
_THREAD_PREFIX: Final = re.compile(r"^\[thrd:[^\]]*\]: ")
#: librdkafka's " (after 0ms in state CONNECT)" after a connection failure.
_STATE_SUFFIX: Final = re.compile(r"\s*\(after \d+ms in state \w+\)")
#: Causes that retrying will not fix: the wait ends at the first one.
_FINAL: Final = frozenset({ConnectionCause.AUTHENTICATION, ConnectionCause.TLS})
#: How librdkafka says a listener closed the connection right away.
_PROTOCOL_SIGNS: Final = (
    "security.protocol",
    "connection closed by peer",
    "remote server closed connection",
)
#: Which of two causes says more, when a client reported both.
_RANK: Final = {
    ConnectionCause.NO_ANSWER: 0,
    ConnectionCause.REFUSED: 1,
    ConnectionCause.UNRESOLVED: 1,
    ConnectionCause.PROTOCOL: 2,
    ConnectionCause.TLS: 3,
    ConnectionCause.AUTHENTICATION: 3,
}
_ADVICE: Final = {
    ConnectionCause.REFUSED: (
        "is the broker running, and is DURAFKA_BOOTSTRAP_SERVERS (or --bootstrap) its address?"
    ),
    ConnectionCause.UNRESOLVED: (
        "check the host names in DURAFKA_BOOTSTRAP_SERVERS (or --bootstrap)"
    ),
    ConnectionCause.AUTHENTICATION: (
        "check sasl.mechanism, sasl.username and sasl.password in DURAFKA_CLIENT_CONFIG"
    ),
    ConnectionCause.TLS: (
        "check ssl.ca.location (the CA that signed the broker's certificate) and the broker's "
        "host name in DURAFKA_CLIENT_CONFIG"
    ),
    ConnectionCause.PROTOCOL: (
        "set security.protocol in DURAFKA_CLIENT_CONFIG to the listener's (plaintext, ssl, "
        "sasl_plaintext or sasl_ssl)"
    ),
    ConnectionCause.NO_ANSWER: (
        "check the address and that the cluster is up; a TLS or SASL listener needs "
        "security.protocol in DURAFKA_CLIENT_CONFIG"
    ),
}


def classify(code: int, text: str) -> ConnectionCause | None:
    """The cause a librdkafka error stands for, or None if it is not about connecting.

    Args:
        code: the :class:`confluent_kafka.KafkaError` code.
        text: its message (librdkafka reports TLS failures as transport errors).
    """
    lowered = text.lower()
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return ConnectionCause.AUTHENTICATION
    if any(sign in lowered for sign in _PROTOCOL_SIGNS):
        # The listener hung up at once: a plaintext client on a TLS or SASL listener, or
        # a TLS client on a plaintext one.
        return ConnectionCause.PROTOCOL
    if code == KafkaError._SSL or "ssl handshake failed" in lowered or "certificate" in lowered:
        return ConnectionCause.TLS
    if code == KafkaError._RESOLVE or "failed to resolve" in lowered:
        return ConnectionCause.UNRESOLVED
    if "connection refused" in lowered:
        return ConnectionCause.REFUSED
    return None


def connection_error(
    bootstrap: str, cause: ConnectionCause, detail: str | None = None
) -> ClusterConnectionError:
    """The one-line error for a cluster that cannot be reached, with what to check."""
    said = f" ({_one_line(detail)})" if detail else ""
    return ClusterConnectionError(
        f"cannot reach Kafka at {bootstrap}: {cause}{said}; {_ADVICE[cause]}", cause
    )


@dataclass(frozen=True)
class _Seen:
    cause: ConnectionCause
    detail: str


class ClientErrors:
    """The ``error_cb`` and the ``logger`` of every confluent-kafka client of one transport.

    Before the cluster has answered (:meth:`reached`), errors are only kept
    (and logged at debug level): :func:`await_cluster` turns the most telling
    one into the error it raises. Afterwards they are logged as warnings, each
    kind at most once a minute, since librdkafka repeats them on every retry;
    fatal ones always, as errors.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: _Seen | None = None
        self._reached = False
        self._logged: dict[int, float] = {}
        self._librdkafka = logging.getLogger(LIBRDKAFKA_LOGGER)
        self._last_error_at: float | None = None

    def log(self, level: int, msg: str, *args: object) -> None:
        """librdkafka's log line (confluent-kafka calls ``logger.log``): kept if telling, passed on.

        Some causes appear only here, e.g. a listener closing the connection at once.
        """
        if level >= logging.INFO:
            # confluent-kafka logs ("%s [%s] %s", facility, client name, librdkafka's line).
            text = str(args[-1]) if args else msg
            self._remember(classify(KafkaError.NO_ERROR, text), _THREAD_PREFIX.sub("", text))
        self._librdkafka.log(level, msg, *args)

    def __call__(self, error: KafkaError) -> None:
        """Record (or log) one client error; librdkafka calls it from its poll."""
        code, text = error.code(), error.str()
        if error.fatal():
            log.error("Kafka client fatal error: %s", text)
            return
        self._last_error_at = time.monotonic()
        self._remember(classify(code, text), text)
        with self._lock:
            if not self._reached:
                log.debug("Kafka client error while connecting: %s", text)
                return
            now = time.monotonic()
            if now - self._logged.get(code, -_REPEAT_AFTER_S) < _REPEAT_AFTER_S:
                return
            self._logged[code] = now
        log.warning("Kafka client error: %s", text)

    def _remember(self, cause: ConnectionCause | None, text: str) -> None:
        if cause is None:
            return
        with self._lock:
            if self._seen is None or _RANK[cause] >= _RANK[self._seen.cause]:
                self._seen = _Seen(cause, text)

    def troubled_within(self, seconds: float) -> bool:
        """Whether a client reported an error (broker down, connection lost, a request
        timed out) in the last ``seconds``: librdkafka's transactional calls are known
        to block past their timeout only after such trouble (see ``KafkaTransactionalProducer``).
        """
        last = self._last_error_at
        return last is not None and time.monotonic() - last < seconds

    @property
    def cause(self) -> ConnectionCause | None:
        """The most telling connection problem seen so far."""
        seen = self._seen
        return None if seen is None else seen.cause

    def reached(self) -> None:
        """The cluster answered: from now on errors are logged, and old ones forgotten."""
        with self._lock:
            self._reached = True
            self._seen = None

    def error(self, bootstrap: str, waited: float) -> ClusterConnectionError:
        """The error to raise for what was seen (``waited`` s without an answer if nothing)."""
        seen = self._seen
        if seen is None:
            return connection_error(
                bootstrap, ConnectionCause.NO_ANSWER, f"nothing within {waited:g} s"
            )
        return connection_error(bootstrap, seen.cause, seen.detail)


def await_cluster(
    admin: Any, errors: ClientErrors, bootstrap: str, timeout: float = CONNECT_TIMEOUT_S
) -> None:
    """Wait until the cluster answers ``admin`` (a confluent-kafka ``AdminClient``).

    Args:
        admin: an admin client whose ``error_cb`` is ``errors``.
        errors: the transport's client errors.
        bootstrap: the cluster's address, for the message.
        timeout: seconds to wait at most.

    Raises:
        ClusterConnectionError: authentication, TLS or the security protocol
            failed (at once), or the cluster did not answer within ``timeout``
            (naming a refused or unresolved address if that is what was seen).
    """
    deadline = time.monotonic() + timeout
    # DescribeCluster: one small request, whatever the number of topics.
    future = admin.describe_cluster(request_timeout=timeout)
    while True:
        admin.poll(0.1)  # serves error_cb (and the logger) meanwhile
        try:
            future.result(timeout=0.01)
        except concurrent.futures.TimeoutError:
            pass
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() >= 0:
                errors.reached()  # a broker answered, if with an error of its own
                return
            # A local error (timed out, transport failure): the error_cb said why.
        else:
            errors.reached()
            return
        if errors.cause in _FINAL or time.monotonic() >= deadline:
            raise errors.error(bootstrap, timeout)
        if future.done():  # timed out inside librdkafka: ask again until our deadline
            future = admin.describe_cluster(request_timeout=max(deadline - time.monotonic(), 0.1))


def _one_line(text: str) -> str:
    # The address is in our message already.
    return " ".join(_STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", text)).split())
