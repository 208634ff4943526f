"""The durafka exception hierarchy.

Every error durafka raises on purpose derives from :class:`DurafkaError`, so
``except durafka.DurafkaError`` catches all of them. Messages say what was
wrong and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # A cycle for the type checker only: OrchestrationFailed carries the final
    # status, and the status module needs errors (FailureDetails, and payload
    # decoding raises durafka errors). Nothing is imported at run time.
    from durafka.status import OrchestrationStatus


class DurafkaError(Exception):
    """Root of every error raised by durafka."""


class ConfigurationError(DurafkaError):
    """A setting, a topic or a registration is invalid."""


class TopologyMismatchError(ConfigurationError):
    """An existing Kafka topic differs from the spec in ``topology/``."""


class BrokerUnavailableError(DurafkaError):
    """No Kafka broker could be reached or started."""


class ConnectionCause(StrEnum):
    """Why a Kafka cluster could not be reached (:class:`ClusterConnectionError`)."""

    REFUSED = "connection refused"
    UNRESOLVED = "host name not resolved"
    AUTHENTICATION = "authentication failed"
    TLS = "TLS failure"
    PROTOCOL = "security protocol mismatch"
    NO_ANSWER = "no answer"


class ClusterConnectionError(BrokerUnavailableError):
    """A Kafka cluster could not be reached; ``cause`` says why.

    Attributes:
        cause: what the Kafka client reported: a refused connection, an unknown
            host, failed authentication, a failed TLS handshake, a listener
            speaking another security protocol, or no answer at all.
    """

    def __init__(self, message: str, cause: ConnectionCause) -> None:
        super().__init__(message)
        self.cause = cause


class ContainerUnavailableError(DurafkaError):
    """Podman (or an image or container it should give) is missing or failed."""


class PayloadTooLargeError(DurafkaError, ValueError):
    """A user payload exceeds ``max_payload_bytes``; nothing was written."""


class RecordTooLargeError(DurafkaError):
    """Something durafka would write does not fit in one Kafka record.

    The limit is the producer's ``message.max.bytes`` and the topic's
    ``max.message.bytes`` (:mod:`durafka.transport.limits`). It is the reason an
    instance fails ("history too large", "status too large", ...) or an entity
    operation is rejected; the message gives the sizes.
    """


class SerializationError(DurafkaError, ValueError):
    """A payload could not be encoded to or decoded from JSON for its type."""


class DecodeError(DurafkaError):
    """A Kafka record could not be decoded (bad Avro, unknown schema fingerprint)."""


class UnknownSchemaError(DecodeError):
    """A value carries the Avro single-object marker and a schema fingerprint this version
    does not know: written by a newer durafka, or garbage (see
    :func:`durafka.codec.records.written_by_newer_release`, which tells them apart).

    Attributes:
        schema: the record type that was expected, e.g. ``io.durafka.OrchestrationMessage``.
        fingerprint: the unknown fingerprint.
    """

    def __init__(self, message: str, *, schema: str, fingerprint: int) -> None:
        super().__init__(message)
        self.schema = schema
        self.fingerprint = fingerprint


class UpgradeRequiredError(DurafkaError):
    """A newer durafka wrote a record or stored value that this version cannot read.

    The processor stops consuming that partition (only it) without committing past
    the record, and logs this error; the partition goes on once an upgraded
    processor takes it (or this one is upgraded and restarted). Nothing is lost.

    Attributes:
        partition: the input partition that stopped.
    """

    def __init__(self, message: str, *, partition: int) -> None:
        super().__init__(message)
        self.partition = partition


class InvalidMessageError(DurafkaError):
    """A message on ``H.orchestrations`` that its target cannot apply (malformed, of a kind
    the target does not take, for an unknown instance or entity); it is dead-lettered."""


class InstanceQuarantinedError(DurafkaError):
    """An instance's stored state could not be decoded, so the processor quarantined it.

    Never raised: it is the ``error_type`` of the instance's failure details (match it
    with ``status.failure_details.is_caused_by(InstanceQuarantinedError)``). The
    instance is FAILED, its stored values and the records sent to it are on
    ``H.dead-letters``; ``durafka dead-letters quarantined`` lists such instances.
    """


class InvalidInstanceIdError(DurafkaError, ValueError):
    """An instance or entity id breaks the id rules (:mod:`durafka.ids`); nothing was written."""


class UnknownFunctionError(DurafkaError, LookupError):
    """An orchestration, activity or entity name is not registered."""


class InstanceAlreadyExistsError(DurafkaError):
    """``start_new`` named an instance id that is already pending or running."""


class InstanceNotFoundError(DurafkaError, LookupError):
    """No instance with that id is known to the status view."""


class InstanceNotRunningError(DurafkaError):
    """The instance has finished (Completed, Failed, Terminated) and takes no more events."""


class InstanceNotFinishedError(DurafkaError):
    """The instance is still Pending, Running or Suspended, so it cannot be purged yet."""


class NonDeterminismError(DurafkaError):
    """An orchestrator did something on replay other than what its history recorded.

    The instance fails with this error instead of corrupting its state. The usual
    cause is a code change deployed while instances were running, or a decision
    taken on wall-clock time, randomness or I/O outside ``ctx``.

    Attributes:
        seq: the sequence id where the code and the history part (None: unknown).
        recorded: the call the history recorded there (e.g. ``call_activity('charge')``).
        taken: the call the code makes there now (None: it makes none).
        location: ``file:line in function`` of the orchestrator code when the
            divergence was found (None: the orchestrator had returned).
    """

    def __init__(
        self,
        message: str,
        *,
        seq: int | None = None,
        recorded: str | None = None,
        taken: str | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message)
        self.seq = seq
        self.recorded = recorded
        self.taken = taken
        self.location = location


class RewindError(DurafkaError):
    """An instance cannot be rewound or reset as asked; nothing was changed.

    The message says why (not failed, failed in its own code rather than in an
    activity or sub-orchestration, inside an entity lock, ...) and what to do instead.
    """


class OrchestrationUsageError(DurafkaError):
    """An orchestrator awaited something that is not a durafka task (e.g. ``asyncio.sleep``)."""


class TransactionError(DurafkaError):
    """A Kafka transaction could not be committed; the batch will be reprocessed.

    Attributes:
        fatal: the producer is unusable (fenced by a newer producer with the same
            ``transactional.id``, or a fatal client error): close it and create a
            new one. When False the error is abortable: call ``abort_transaction()``
            and the producer can begin a new transaction.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal

    @property
    def abortable(self) -> bool:
        """Whether ``abort_transaction()`` recovers the producer (``not fatal``)."""
        return not self.fatal


class RecordRejectedError(TransactionError):
    """The client or the broker refused one record for good (too large, invalid).

    Producing the same record again fails the same way, so retrying the batch
    never helps: the processor finds the instance, entity or input record the
    record came from and gives that one a visible outcome instead. Abortable
    (``fatal`` is False).

    Attributes:
        topic: where the record was going.
        partition: its partition.
        code: the client's error name, e.g. ``MSG_SIZE_TOO_LARGE``.
    """

    def __init__(self, message: str, *, topic: str, partition: int, code: str) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.code = code


class ProducerGivenUpError(TransactionError):
    """A transactional call librdkafka did not return from was given up, with its producer.

    Seen with ``send_offsets_to_transaction`` after the broker was unreachable
    (librdkafka issues 5456 and 5511). Nothing of the transaction was committed;
    the producer fails every later call (not fatal: ``abort_transaction`` fails
    too, and the caller replaces it, whose successor's ``init_transactions``
    aborts the transaction). Other producers that lived through the same outage
    may be stuck the same way on their next call: replace them too.
    """


class CommitOutcomeUnknownError(TransactionError):
    """``commit_transaction`` did not finish: the transaction may or may not have committed.

    Raised when the commit timed out or kept failing with retriable errors (the
    broker or the transaction coordinator unreachable). Calling
    ``commit_transaction`` again resumes the commit; aborting is wrong (the commit
    may already be decided), and so is processing the batch again on the state from
    before it. A processor that cannot learn the outcome recreates its producer
    (``init_transactions`` completes or aborts the pending transaction) and restores
    the affected partitions from the changelog.
    """


class PartitionOwnershipError(DurafkaError):
    """Two processors would process the same partition (overlapping static ranges, or
    static ranges mixed with group-mode processors on one task hub)."""


class TransportError(DurafkaError):
    """A Kafka client (or the ``memory://`` broker) failed or was used wrongly.

    Raised for fatal client errors (authentication, authorization, a fenced group
    member), unknown topics or partitions, and calls the client's state does not
    allow (e.g. ``seek`` on a partition that is not assigned).
    """


class StuckCallError(TransportError):
    """A blocking Kafka client call ran far past its timeout (see :mod:`durafka.watchdog`).

    librdkafka did not return; the role thread that made the call is lost. The
    command line exits (a supervisor restarts it); an embedded runner stops its
    roles and raises this error.
    """


class StoreError(DurafkaError):
    """The partition state store could not be opened, restored or written."""


class MalformedKeyError(StoreError):
    """A store or changelog key does not follow the store's key layout (e.g. ``t/garbage``)."""


class BenchmarkError(DurafkaError):
    """A ``durafka bench`` run is invalid: a wrong result, a dead role process, or a timeout."""


class PoisonTaskError(DurafkaError):
    """An activity task was delivered ``max_activity_deliveries`` times without a result.

    Each time, the worker running it died (the activity crashed the process,
    was killed, ran out of memory) or lost its partition before the result was
    committed. The task fails with this error instead of running again; a
    :class:`~durafka.RetryPolicy` never retries it.
    """


class WaitTimeoutError(DurafkaError, TimeoutError):
    """An operation did not finish within its deadline (a client's wait, a partition's restore).

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


#: The longest failure message kept (characters); longer ones are cut where they are made.
MAX_FAILURE_MESSAGE_CHARS = 8_000
#: The longest stack trace kept (characters): its end (where the error was raised) is kept.
MAX_STACK_TRACE_CHARS = 32_000
#: The longest error type kept (characters).
MAX_ERROR_TYPE_CHARS = 1_000


def _cut_head(text: str, limit: int) -> str:
    """``text`` with its end cut to at most ``limit`` characters, with a marker saying so."""
    if len(text) <= limit:
        return text
    marker = f" [... {len(text) - limit:,} more characters cut by durafka]"
    return text[: max(0, limit - len(marker))] + marker


def _cut_tail(text: str, limit: int) -> str:
    """``text`` with its start cut to at most ``limit`` characters, with a marker saying so."""
    if len(text) <= limit:
        return text
    marker = f"[... {len(text) - limit:,} characters cut by durafka ...]\n"
    return marker + text[len(text) - max(0, limit - len(marker)) :]


@dataclass(frozen=True)
class FailureDetails:
    """Why a task or an instance failed, carried across processes.

    Where durafka makes them (:meth:`from_exception`: activities, orchestrators,
    entity operations) they are bounded (:meth:`bounded`): the message to
    :data:`MAX_FAILURE_MESSAGE_CHARS` (its start kept), the stack trace to
    :data:`MAX_STACK_TRACE_CHARS` (its end kept, where the error was raised),
    each with a marker saying how much was cut; so a failure always fits the
    records it travels in.

    Attributes:
        error_type: qualified name of the exception class, e.g. ``"builtins.ValueError"``.
        message: ``str(exception)``.
        stack_trace: the formatted traceback, if one was captured.
    """

    error_type: str
    message: str
    stack_trace: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> FailureDetails:
        """Capture type, message and traceback of ``exc``, bounded (see the class docstring)."""
        import traceback

        t = type(exc)
        return cls(
            error_type=f"{t.__module__}.{t.__qualname__}",
            message=str(exc),
            stack_trace="".join(traceback.format_exception(exc)),
        ).bounded()

    def bounded(self) -> FailureDetails:
        """These details with message, stack trace and type cut to their bounds."""
        trace = self.stack_trace
        if (
            len(self.message) <= MAX_FAILURE_MESSAGE_CHARS
            and (trace is None or len(trace) <= MAX_STACK_TRACE_CHARS)
            and len(self.error_type) <= MAX_ERROR_TYPE_CHARS
        ):
            return self
        return FailureDetails(
            _cut_head(self.error_type, MAX_ERROR_TYPE_CHARS),
            _cut_head(self.message, MAX_FAILURE_MESSAGE_CHARS),
            None if trace is None else _cut_tail(trace, MAX_STACK_TRACE_CHARS),
        )

    def is_caused_by(self, exc_type: type[BaseException]) -> bool:
        """Whether the original error was ``exc_type`` (matched by qualified name)."""
        return self.error_type == f"{exc_type.__module__}.{exc_type.__qualname__}" or (
            self.error_type.rsplit(".", 1)[-1] == exc_type.__qualname__
        )


@dataclass
class TaskFailedError(DurafkaError):
    """A task awaited by an orchestration failed; catch it to compensate.

    Attributes:
        message: human readable summary.
        details: type, message and traceback of the original error.
    """

    message: str
    details: FailureDetails = field(default_factory=lambda: FailureDetails("", ""))

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ActivityFailed(TaskFailedError):
    """An activity raised; ``details`` carries the original type, message and traceback."""


class ActivityTimeoutError(ActivityFailed):
    """An activity did not complete within its ``timeout`` (schedule-to-close).

    A result arriving later is dropped. Under a retry policy a timeout counts as a
    failed attempt.
    """


class EventTimeoutError(DurafkaError, TimeoutError):
    """``wait_for_external_event(..., timeout=...)`` expired before the event arrived."""


class SubOrchestrationFailed(TaskFailedError):
    """A sub-orchestration ended Failed or Terminated."""


class EntityOperationFailed(TaskFailedError):
    """An entity operation called with ``ctx.call_entity`` raised.

    The operation's state changes were rolled back; ``details`` carries the
    original type, message and traceback.
    """


class EntityLockFailed(TaskFailedError):
    """``async with ctx.lock(...)`` could not take its entities.

    An entity could not process the lock request (a processor error, a malformed
    request); ``details`` says why. The entities already locked for the request
    are released.
    """


class OrchestrationFailed(DurafkaError):
    """``wait_for_completion(..., raise_on_failure=True)`` saw a Failed or Terminated instance.

    Attributes:
        status: the instance's final status (failure details, termination reason).
    """

    def __init__(self, message: str, *, status: OrchestrationStatus | None = None) -> None:
        super().__init__(message)
        self.status = status
