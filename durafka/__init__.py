"""durafka: durable functions for Python, event-sourced over Apache Kafka.

Example:
    >>> import durafka
    >>> app = durafka.App("hello")
    >>> @app.activity
    ... def say_hello(name: str) -> str:
    ...     return f"Hello, {name}!"
    >>> @app.orchestration
    ... async def hello_world(ctx: durafka.OrchestrationContext, name: str) -> str:
    ...     return await ctx.call_activity(say_hello, name)
"""

from durafka.activities.context import ActivityContext
from durafka.app import App
from durafka.entities import Entity, EntityContext, EntityId, EntityMetadata
from durafka.errors import (
    ActivityFailed,
    ActivityTimeoutError,
    DurafkaError,
    EntityLockFailed,
    EntityOperationFailed,
    EventTimeoutError,
    FailureDetails,
    InstanceAlreadyExistsError,
    InstanceNotFinishedError,
    InstanceNotFoundError,
    InstanceNotRunningError,
    InstanceQuarantinedError,
    NonDeterminismError,
    OrchestrationFailed,
    PayloadTooLargeError,
    PoisonTaskError,
    RecordTooLargeError,
    SubOrchestrationFailed,
    TaskFailedError,
    WaitTimeoutError,
)
from durafka.runtime.context import OrchestrationContext
from durafka.runtime.history import IdReusePolicy
from durafka.runtime.retry import RetryPolicy
from durafka.runtime.tasks import Task, when_all, when_any
from durafka.settings import Settings
from durafka.status import OrchestrationStatus, RuntimeStatus
from durafka.version import __version__

__all__ = [
    "ActivityContext",
    "ActivityFailed",
    "ActivityTimeoutError",
    "App",
    "DurafkaError",
    "Entity",
    "EntityContext",
    "EntityId",
    "EntityLockFailed",
    "EntityMetadata",
    "EntityOperationFailed",
    "EventTimeoutError",
    "FailureDetails",
    "IdReusePolicy",
    "InstanceAlreadyExistsError",
    "InstanceNotFinishedError",
    "InstanceNotFoundError",
    "InstanceNotRunningError",
    "InstanceQuarantinedError",
    "NonDeterminismError",
    "OrchestrationContext",
    "OrchestrationFailed",
    "OrchestrationStatus",
    "PayloadTooLargeError",
    "PoisonTaskError",
    "RecordTooLargeError",
    "RetryPolicy",
    "RuntimeStatus",
    "Settings",
    "SubOrchestrationFailed",
    "Task",
    "TaskFailedError",
    "WaitTimeoutError",
    "__version__",
    "when_all",
    "when_any",
]
